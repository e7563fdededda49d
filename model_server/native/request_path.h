/*
 * The two steps of a `score` call around the tree walk that numpy does in many small calls:
 *
 *   fill_rows(values, columns, bidders, table, out)
 *       out[i, :r] = values (float32), out[i, r + j] = table[bidders[i], columns[j]]:
 *       the feature rows of one request, built from its request-level values and a gather
 *       from the per-bidder table (model_server/features.py, FeaturePipeline.rows).
 *   score_reply(head, tail, positions, flag_offset, probabilities, thresholds) -> bytes
 *       head + tail with probability j written as a big-endian double at
 *       len(head) + positions[j] and the byte (double(probability) >= thresholds[j]) at
 *       len(head) + positions[j] + flag_offset (model_server/fast_codec.py).
 *
 * Both check every index against the buffers, so bad arguments raise instead of writing out
 * of bounds. Included once, by forest.c.
 */
#ifndef RTBSERVE_REQUEST_PATH_H
#define RTBSERVE_REQUEST_PATH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define STACK_VALUES 256 /* request-level values converted on the stack up to this many */

/* PyType_Ready, then the type as attribute `name` of `module` (the module's init). */
static int add_type(PyObject *module, const char *name, PyTypeObject *type) {
    if (PyType_Ready(type) < 0) {
        return -1;
    }
    Py_INCREF(type);
    if (PyModule_AddObject(module, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

/* A C-contiguous buffer of 4- or 8-byte floats with `ndim` dimensions. */
static int get_float_buffer(PyObject *obj, const char *name, int ndim, int itemsize, int writable,
                            Py_buffer *view) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        return -1;
    }
    const char *fmt = view->format;
    if (fmt != NULL && (fmt[0] == '<' || fmt[0] == '=' || fmt[0] == '@')) {
        fmt++;
    }
    const char code = itemsize == 4 ? 'f' : 'd';
    if (view->ndim != ndim || view->itemsize != itemsize || fmt == NULL || fmt[0] != code ||
        fmt[1] != '\0') {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous %d-D float%d array", name, ndim,
                     itemsize * 8);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Item i of a list or tuple (from PySequence_Fast) as an index in [0, limit). */
static int index_at(PyObject *seq, Py_ssize_t i, Py_ssize_t limit, const char *name,
                    Py_ssize_t *out) {
    Py_ssize_t v = PyNumber_AsSsize_t(PySequence_Fast_GET_ITEM(seq, i), PyExc_IndexError);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v < 0 || v >= limit) {
        PyErr_Format(PyExc_IndexError, "%s[%zd] = %zd is out of range [0, %zd)", name, i, v, limit);
        return -1;
    }
    *out = v;
    return 0;
}

/* The table rows named by item i of `bidders` (a list or tuple from PySequence_Fast), each
 * checked against [0, n_rows), into `out` (which has room for all of them). */
static int table_rows_of(PyObject *bidders, Py_ssize_t n_rows, Py_ssize_t *out) {
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(bidders);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (index_at(bidders, i, n_rows, "bidders", &out[i]) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Rows for `n` bidders (table row indexes, already checked against the table), written to
 * `dst`: each is the request part `req` (r floats) followed by that bidder's table row at
 * `cols` (c column indexes, already checked against n_cols). */
static void assemble_rows(const float *req, Py_ssize_t r, const Py_ssize_t *cols, Py_ssize_t c,
                          const Py_ssize_t *bidders, Py_ssize_t n, const float *table,
                          Py_ssize_t n_cols, float *dst) {
    for (Py_ssize_t i = 0; i < n; i++) {
        float *row = dst + i * (r + c);
        const float *src = table + bidders[i] * n_cols;
        memcpy(row, req, sizeof(float) * (size_t)r);
        for (Py_ssize_t j = 0; j < c; j++) {
            row[r + j] = src[cols[j]];
        }
    }
}

static PyObject *rp_fill_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "fill_rows(values, columns, bidders, table, out) takes 5 arguments");
        return NULL;
    }
    PyObject *values = NULL, *columns = NULL, *bidders = NULL, *result = NULL;
    Py_buffer table = {0}, out = {0};
    int have_table = 0, have_out = 0;
    float stack_values[STACK_VALUES];
    float *req = stack_values;
    Py_ssize_t *cols = NULL, *rows = NULL;

    values = PySequence_Fast(args[0], "values must be a sequence of numbers");
    columns = values ? PySequence_Fast(args[1], "columns must be a sequence of ints") : NULL;
    bidders = columns ? PySequence_Fast(args[2], "bidders must be a sequence of ints") : NULL;
    if (bidders == NULL) {
        goto done;
    }
    if (get_float_buffer(args[3], "table", 2, 4, 0, &table) != 0) {
        goto done;
    }
    have_table = 1;
    if (get_float_buffer(args[4], "out", 2, 4, 1, &out) != 0) {
        goto done;
    }
    have_out = 1;
    const Py_ssize_t r = PySequence_Fast_GET_SIZE(values);
    const Py_ssize_t c = PySequence_Fast_GET_SIZE(columns);
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(bidders);
    if (out.shape[0] != n || out.shape[1] != r + c) {
        PyErr_Format(PyExc_ValueError, "out must have shape (%zd, %zd), not (%zd, %zd)", n, r + c,
                     out.shape[0], out.shape[1]);
        goto done;
    }
    if (r > STACK_VALUES) {
        req = PyMem_Malloc(sizeof(float) * (size_t)r);
    }
    cols = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(c > 0 ? c : 1));
    if (req == NULL || cols == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < r; k++) {
        /* Same rounding as numpy's float64 -> float32 cast; NaN stays NaN. */
        const double v = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(values, k));
        if (v == -1.0 && PyErr_Occurred()) {
            goto done;
        }
        req[k] = (float)v;
    }
    const Py_ssize_t n_rows = table.shape[0], n_cols = table.shape[1];
    for (Py_ssize_t j = 0; j < c; j++) {
        if (index_at(columns, j, n_cols, "columns", &cols[j]) != 0) {
            goto done;
        }
    }
    rows = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n > 0 ? n : 1));
    if (rows == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (table_rows_of(bidders, n_rows, rows) != 0) {
        goto done;
    }
    assemble_rows(req, r, cols, c, rows, n, table.buf, n_cols, out.buf);
    result = Py_None;
    Py_INCREF(result);
done:
    if (req != stack_values) {
        PyMem_Free(req);
    }
    PyMem_Free(cols);
    PyMem_Free(rows);
    if (have_table) {
        PyBuffer_Release(&table);
    }
    if (have_out) {
        PyBuffer_Release(&out);
    }
    Py_XDECREF(values);
    Py_XDECREF(columns);
    Py_XDECREF(bidders);
    return result;
}

static void put_be_double(unsigned char *p, double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    for (int k = 7; k >= 0; k--) {
        p[k] = (unsigned char)(bits & 0xFF);
        bits >>= 8;
    }
}

static PyObject *rp_score_reply(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "score_reply(head, tail, positions, flag_offset, probabilities, "
                        "thresholds) takes 6 arguments");
        return NULL;
    }
    PyObject *positions = NULL, *result = NULL;
    Py_buffer head = {0}, tail = {0}, probs = {0}, thr = {0};
    int got = 0;
    if (PyObject_GetBuffer(args[0], &head, PyBUF_SIMPLE) != 0) {
        goto done;
    }
    got = 1;
    if (PyObject_GetBuffer(args[1], &tail, PyBUF_SIMPLE) != 0) {
        goto done;
    }
    got = 2;
    if (get_float_buffer(args[4], "probabilities", 1, 4, 0, &probs) != 0) {
        goto done;
    }
    got = 3;
    if (get_float_buffer(args[5], "thresholds", 1, 8, 0, &thr) != 0) {
        goto done;
    }
    got = 4;
    const Py_ssize_t flag_offset = PyLong_AsSsize_t(args[3]);
    if (flag_offset == -1 && PyErr_Occurred()) {
        goto done;
    }
    positions = PySequence_Fast(args[2], "positions must be a sequence of ints");
    if (positions == NULL) {
        goto done;
    }
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(positions);
    if (probs.shape[0] != n || thr.shape[0] != n) {
        PyErr_Format(PyExc_ValueError,
                     "probabilities and thresholds must have %zd entries (one per position)", n);
        goto done;
    }
    if (flag_offset < 8) {
        PyErr_SetString(PyExc_ValueError, "flag_offset must be at least 8 (after the double)");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, head.len + tail.len);
    if (result == NULL) {
        goto done;
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
    memcpy(dst, head.buf, (size_t)head.len);
    memcpy(dst + head.len, tail.buf, (size_t)tail.len);
    const float *p = probs.buf;
    const double *t = thr.buf;
    for (Py_ssize_t j = 0; j < n; j++) {
        Py_ssize_t pos;
        if (index_at(positions, j, tail.len - flag_offset, "positions", &pos) != 0) {
            Py_CLEAR(result);
            goto done;
        }
        const double v = (double)p[j];
        put_be_double(dst + head.len + pos, v);
        dst[head.len + pos + flag_offset] = v >= t[j] ? 1 : 0;
    }
done:
    Py_XDECREF(positions);
    if (got >= 4) {
        PyBuffer_Release(&thr);
    }
    if (got >= 3) {
        PyBuffer_Release(&probs);
    }
    if (got >= 2) {
        PyBuffer_Release(&tail);
    }
    if (got >= 1) {
        PyBuffer_Release(&head);
    }
    return result;
}

#define REQUEST_PATH_METHODS                                                                       \
    {"fill_rows", (PyCFunction)(void (*)(void))rp_fill_rows, METH_FASTCALL,                        \
     "fill_rows(values, columns, bidders, table, out): one request's feature rows: "               \
     "out[i, :r] = values, out[i, r + j] = table[bidders[i], columns[j]]."},                       \
    {                                                                                              \
        "score_reply", (PyCFunction)(void (*)(void))rp_score_reply, METH_FASTCALL,                 \
            "score_reply(head, tail, positions, flag_offset, probabilities, thresholds) -> "       \
            "bytes: head + tail with each probability written as a big-endian double at "          \
            "len(head) + positions[j] and the flag probability >= thresholds[j] "                  \
            "flag_offset bytes after it."                                                          \
    }

#endif
