/*
 * A whole `score` call in one native step, for the calls the worker sees over and over:
 *
 *   ScorePath(encoder, forest, known, loads, clock, reply_head, max_frame, max_bidders,
 *             latency_bounds, bidder_bounds, select=True)
 *   path.call(data, write) -> bool
 *       `data` is what one read gave: if it is exactly one framed, plainly written `score` call
 *       whose bytes after the bid request are a key of `known` (model_server/service.py,
 *       FrameHandler), the request is decoded (with `select`, request_scan.h builds only what
 *       is read and leaves what it does not take to `loads`), checked, encoded, scored, and the
 *       framed reply is passed to `write`; then its latency and bidder count are counted and
 *       the result is True. Anything else (another method, a new bidder list, invalid JSON, a
 *       request that fails a check, a Python error on the way) returns False having written and
 *       counted nothing: the caller's general path then answers it, errors included, so this
 *       path never decides what an error reply says.
 *   path.take_counts() -> (calls, latency_counts, latency_seconds, bidder_counts, bidders)
 *       what was counted since the last take, reset to zero; counts are per bucket as
 *       bisect_left(bounds, value) picks them (model_server/metrics.py, Histogram).
 *
 * Each value of `known` is (bidder indices, template); the template's `layout` attribute is
 * the bytes fast_codec.reply_layout builds: n (int32), the n table rows (int32), the n
 * positions of the probabilities in the tail (int32), the n thresholds (float64), all little
 * endian, then the reply's tail. Included once, by forest.c, after the Forest type.
 */
#ifndef RTBSERVE_SCORE_PATH_H
#define RTBSERVE_SCORE_PATH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>
#include <time.h>

#include "request_encode.h"
#include "request_path.h"

#define SP_MAX_BOUNDS  64
#define SP_FLAG_OFFSET 11 /* fast_codec._FLAG_OFFSET: from a probability to its forward flag */

/* A strict CALL message for "score" up to its seqid, then field 1 (bid_request, a string). */
static const unsigned char SP_CALL_HEAD[] = {0x80, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00,
                                             0x05, 's',  'c',  'o',  'r',  'e'};
static const unsigned char SP_BID_REQUEST_FIELD[] = {0x0b, 0x00, 0x01};
#define SP_HEAD_LEN    ((Py_ssize_t)sizeof SP_CALL_HEAD)
#define SP_PLAIN_START (SP_HEAD_LEN + 4 + 3 + 4)
/* Reply after the message header and seqid: success (struct, field 0), request_id (string, 1). */
static const unsigned char SP_REPLY_FIELDS[] = {0x0c, 0x00, 0x00, 0x0b, 0x00, 0x01};

typedef struct {
    PyObject_HEAD EncoderObject *encoder;
    ForestObject *forest;
    PyObject *known;
    PyObject *loads;
    int select;      /* build only the fields read (request_scan.h) before falling back to loads */
    PyObject *clock; /* None: the system's real-time clock, as time.time reads it */
    PyObject *reply_head;
    PyObject *layout_name;
    Py_ssize_t max_frame, max_bidders;
    float *rows, *probabilities;
    Py_ssize_t *table_rows;
    double latency_bounds[SP_MAX_BOUNDS], bidder_bounds[SP_MAX_BOUNDS];
    Py_ssize_t n_latency_bounds, n_bidder_bounds;
    long long calls;
    long long latency_counts[SP_MAX_BOUNDS + 1], bidder_counts[SP_MAX_BOUNDS + 1];
    double latency_seconds, bidders_total;
} ScorePathObject;

static int32_t sp_be_i32(const unsigned char *p) {
    return (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
                     (uint32_t)p[3]);
}

static void sp_put_be_i32(unsigned char *p, int32_t v) {
    const uint32_t u = (uint32_t)v;
    p[0] = (unsigned char)(u >> 24);
    p[1] = (unsigned char)(u >> 16);
    p[2] = (unsigned char)(u >> 8);
    p[3] = (unsigned char)u;
}

static int32_t sp_le_i32(const unsigned char *p) {
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24);
}

static double sp_le_f64(const unsigned char *p) {
    uint64_t bits = 0;
    for (int k = 7; k >= 0; k--) {
        bits = bits << 8 | p[k];
    }
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

static double sp_seconds(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static Py_ssize_t sp_bucket(const double *bounds, Py_ssize_t n, double v) {
    Py_ssize_t i = 0; /* bisect_left: the first bound >= v */
    while (i < n && bounds[i] < v) {
        i++;
    }
    return i;
}

/* The checks of openrtb.validate_bid_request, for what `loads` (orjson) makes: exact types. */
static int sp_valid_request(PyObject *req) {
    if (!PyDict_CheckExact(req)) {
        return 0;
    }
    PyObject *id = PyDict_GetItemWithError(req, re_str.id);
    PyObject *imps = id != NULL ? PyDict_GetItemWithError(req, re_str.imp) : NULL;
    if (imps == NULL || !PyUnicode_CheckExact(id) || !PyList_CheckExact(imps) ||
        PyList_GET_SIZE(imps) == 0) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(imps); i++) {
        PyObject *imp = PyList_GET_ITEM(imps, i);
        PyObject *imp_id = PyDict_CheckExact(imp) ? PyDict_GetItemWithError(imp, re_str.id) : NULL;
        if (imp_id == NULL || !PyUnicode_CheckExact(imp_id)) {
            return 0;
        }
    }
    return 1;
}

/* The known list's (table rows, positions, thresholds, tail), checked against this path. */
typedef struct {
    Py_ssize_t n;
    const unsigned char *positions, *thresholds, *tail;
    Py_ssize_t tail_len;
} SpLayout;

static int sp_read_layout(ScorePathObject *self, PyObject *layout, SpLayout *out) {
    if (!PyBytes_Check(layout)) {
        return 0;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(layout);
    const Py_ssize_t len = PyBytes_GET_SIZE(layout);
    if (len < 4) {
        return 0;
    }
    const Py_ssize_t n = sp_le_i32(p);
    if (n < 0 || n > self->max_bidders || len < 4 + n * 16) {
        return 0;
    }
    const Py_ssize_t n_rows = self->encoder->table.shape[0];
    for (Py_ssize_t i = 0; i < n; i++) {
        const Py_ssize_t row = sp_le_i32(p + 4 + 4 * i);
        if (row < 0 || row >= n_rows) {
            return 0;
        }
        self->table_rows[i] = row;
    }
    out->n = n;
    out->positions = p + 4 + 4 * n;
    out->thresholds = p + 4 + 8 * n;
    out->tail = p + 4 + 16 * n;
    out->tail_len = len - 4 - 16 * n;
    for (Py_ssize_t j = 0; j < n; j++) {
        const Py_ssize_t pos = sp_le_i32(out->positions + 4 * j);
        if (pos < 0 || pos > out->tail_len - SP_FLAG_OFFSET - 1) {
            return 0;
        }
    }
    return 1;
}

/* The framed reply for a scored request (fast_codec.ScoreReplyEncoder.encode_with). */
static PyObject *sp_reply(ScorePathObject *self, int32_t seqid, PyObject *request_id,
                          const SpLayout *layout) {
    Py_ssize_t rid_len;
    const char *rid = PyUnicode_AsUTF8AndSize(request_id, &rid_len);
    if (rid == NULL) {
        return NULL;
    }
    const Py_ssize_t head_len = PyBytes_GET_SIZE(self->reply_head);
    const Py_ssize_t fixed = head_len + 4 + (Py_ssize_t)sizeof SP_REPLY_FIELDS + 4;
    const Py_ssize_t body = fixed + rid_len + layout->tail_len;
    if (body > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "reply too large");
        return NULL;
    }
    PyObject *reply = PyBytes_FromStringAndSize(NULL, 4 + body);
    if (reply == NULL) {
        return NULL;
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(reply);
    sp_put_be_i32(dst, (int32_t)body);
    dst += 4;
    memcpy(dst, PyBytes_AS_STRING(self->reply_head), (size_t)head_len);
    dst += head_len;
    sp_put_be_i32(dst, seqid);
    dst += 4;
    memcpy(dst, SP_REPLY_FIELDS, sizeof SP_REPLY_FIELDS);
    dst += sizeof SP_REPLY_FIELDS;
    sp_put_be_i32(dst, (int32_t)rid_len);
    dst += 4;
    memcpy(dst, rid, (size_t)rid_len);
    dst += rid_len;
    memcpy(dst, layout->tail, (size_t)layout->tail_len);
    for (Py_ssize_t j = 0; j < layout->n; j++) {
        const Py_ssize_t pos = sp_le_i32(layout->positions + 4 * j);
        const double v = (double)self->probabilities[j];
        put_be_double(dst + pos, v);
        dst[pos + SP_FLAG_OFFSET] = v >= sp_le_f64(layout->thresholds + 8 * j) ? 1 : 0;
    }
    return reply;
}

/* The reply to `data`, or NULL: not this path's call (no error set) or an error (set). */
static PyObject *sp_answer(ScorePathObject *self, PyObject *data, Py_ssize_t *n_bidders) {
    if (!PyBytes_CheckExact(data)) {
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    const Py_ssize_t len = PyBytes_GET_SIZE(data);
    if (len < 4 + SP_PLAIN_START || sp_be_i32(p) != len - 4 || len - 4 > self->max_frame) {
        return NULL;
    }
    const unsigned char *frame = p + 4;
    const Py_ssize_t frame_len = len - 4;
    if (memcmp(frame, SP_CALL_HEAD, SP_HEAD_LEN) != 0 ||
        memcmp(frame + SP_HEAD_LEN + 4, SP_BID_REQUEST_FIELD, sizeof SP_BID_REQUEST_FIELD) != 0) {
        return NULL;
    }
    const int32_t json_len = sp_be_i32(frame + SP_PLAIN_START - 4);
    if (json_len < 0 || json_len > frame_len - SP_PLAIN_START) {
        return NULL;
    }
    const Py_ssize_t end = SP_PLAIN_START + json_len;
    PyObject *tail = PyBytes_FromStringAndSize((const char *)frame + end, frame_len - end);
    if (tail == NULL) {
        return NULL;
    }
    PyObject *known = PyDict_GetItemWithError(self->known, tail); /* borrowed */
    Py_DECREF(tail);
    if (known == NULL || !PyTuple_CheckExact(known) || PyTuple_GET_SIZE(known) < 2) {
        return NULL;
    }
    PyObject *layout_bytes = PyObject_GetAttr(PyTuple_GET_ITEM(known, 1), self->layout_name);
    if (layout_bytes == NULL) {
        return NULL;
    }
    PyObject *reply = NULL, *req = NULL;
    SpLayout layout;
    if (!sp_read_layout(self, layout_bytes, &layout)) {
        goto done;
    }
    /* only what is read is built (request_scan.h); what it leaves goes to `loads` (orjson) */
    const int scanned =
        self->select ? scan_request((const char *)frame + SP_PLAIN_START, json_len, &req) : 0;
    if (scanned < 0) {
        goto done;
    }
    if (scanned == 0) {
        PyObject *json =
            PyMemoryView_FromMemory((char *)frame + SP_PLAIN_START, json_len, PyBUF_READ);
        if (json == NULL) {
            goto done;
        }
        req = PyObject_CallOneArg(self->loads, json);
        Py_DECREF(json);
    }
    if (req == NULL || !sp_valid_request(req)) {
        goto done;
    }
    double now;
    if (self->clock == Py_None) {
        now = sp_seconds(CLOCK_REALTIME);
    } else {
        PyObject *t = PyObject_CallNoArgs(self->clock);
        if (t == NULL) {
            goto done;
        }
        now = PyFloat_AsDouble(t);
        Py_DECREF(t);
        if (now == -1.0 && PyErr_Occurred()) {
            goto done;
        }
    }
    if (encoder_fill_rows(self->encoder, req, now, self->table_rows, layout.n, self->rows) != 0) {
        goto done;
    }
    if (eval_rows(self->forest, self->rows, layout.n, self->probabilities) != 0) {
        PyErr_NoMemory();
        goto done;
    }
    PyObject *request_id = PyDict_GetItemWithError(req, re_str.id); /* checked: a str */
    if (request_id != NULL) {
        reply = sp_reply(self, sp_be_i32(frame + SP_HEAD_LEN), request_id, &layout);
        *n_bidders = layout.n;
    }
done:
    Py_XDECREF(req);
    Py_DECREF(layout_bytes);
    return reply;
}

static PyObject *score_path_call(ScorePathObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "call(data, write) takes 2 arguments");
        return NULL;
    }
    const double started = sp_seconds(CLOCK_MONOTONIC);
    Py_ssize_t n_bidders = 0;
    PyObject *reply = sp_answer(self, args[0], &n_bidders);
    if (reply == NULL) {
        PyErr_Clear(); /* the general path meets the same problem and answers it properly */
        Py_RETURN_FALSE;
    }
    PyObject *written = PyObject_CallOneArg(args[1], reply);
    Py_DECREF(reply);
    if (written == NULL) {
        return NULL;
    }
    Py_DECREF(written);
    const double seconds = sp_seconds(CLOCK_MONOTONIC) - started;
    self->calls++;
    self->latency_counts[sp_bucket(self->latency_bounds, self->n_latency_bounds, seconds)]++;
    self->latency_seconds += seconds;
    self->bidder_counts[sp_bucket(self->bidder_bounds, self->n_bidder_bounds, (double)n_bidders)]++;
    self->bidders_total += (double)n_bidders;
    Py_RETURN_TRUE;
}

static PyObject *sp_counts_list(long long *counts, Py_ssize_t n) {
    PyObject *list = PyList_New(n);
    for (Py_ssize_t i = 0; list != NULL && i < n; i++) {
        PyObject *v = PyLong_FromLongLong(counts[i]);
        if (v == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, v);
    }
    return list;
}

static PyObject *score_path_take_counts(ScorePathObject *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *latency = sp_counts_list(self->latency_counts, self->n_latency_bounds + 1);
    PyObject *bidders = sp_counts_list(self->bidder_counts, self->n_bidder_bounds + 1);
    if (latency == NULL || bidders == NULL) {
        Py_XDECREF(latency);
        Py_XDECREF(bidders);
        return NULL;
    }
    PyObject *result = Py_BuildValue("(LNdNd)", self->calls, latency, self->latency_seconds,
                                     bidders, self->bidders_total);
    if (result != NULL) {
        self->calls = 0;
        self->latency_seconds = self->bidders_total = 0.0;
        memset(self->latency_counts, 0, sizeof self->latency_counts);
        memset(self->bidder_counts, 0, sizeof self->bidder_counts);
    }
    return result;
}

static int sp_read_bounds(PyObject *given, const char *name, double *out, Py_ssize_t *n_out) {
    PyObject *seq = PySequence_Fast(given, "bounds must be a sequence of numbers");
    if (seq == NULL) {
        return -1;
    }
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int rc = 0;
    if (n > SP_MAX_BOUNDS) {
        PyErr_Format(PyExc_ValueError, "%s: at most %d bounds", name, SP_MAX_BOUNDS);
        rc = -1;
    }
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
        out[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if (out[i] == -1.0 && PyErr_Occurred()) {
            rc = -1;
        } else if (i > 0 && !(out[i] > out[i - 1])) {
            PyErr_Format(PyExc_ValueError, "%s must be increasing", name);
            rc = -1;
        }
    }
    *n_out = n;
    Py_DECREF(seq);
    return rc;
}

static void score_path_clear(ScorePathObject *self) {
    Py_CLEAR(self->encoder);
    Py_CLEAR(self->forest);
    Py_CLEAR(self->known);
    Py_CLEAR(self->loads);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->reply_head);
    Py_CLEAR(self->layout_name);
    PyMem_Free(self->rows);
    PyMem_Free(self->probabilities);
    PyMem_Free(self->table_rows);
    self->rows = self->probabilities = NULL;
    self->table_rows = NULL;
}

static int score_path_init(ScorePathObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"encoder",        "forest",        "known",     "loads",
                             "clock",          "reply_head",    "max_frame", "max_bidders",
                             "latency_bounds", "bidder_bounds", "select",    NULL};
    PyObject *encoder, *forest, *known, *loads, *clock, *reply_head, *latency, *bidder;
    Py_ssize_t max_frame, max_bidders;
    int select = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!OOO!nnOO|p", kwlist, &EncoderType, &encoder,
                                     &ForestType, &forest, &PyDict_Type, &known, &loads, &clock,
                                     &PyBytes_Type, &reply_head, &max_frame, &max_bidders, &latency,
                                     &bidder, &select)) {
        return -1;
    }
    EncoderObject *e = (EncoderObject *)encoder;
    ForestObject *f = (ForestObject *)forest;
    const Py_ssize_t width = RE_N_NUMERIC + e->n_code + e->head + e->n_cross;
    if (!e->have_table || f->depths == NULL || width != f->n_features) {
        PyErr_Format(PyExc_ValueError,
                     "the encoder makes rows of %zd features; the forest takes %zd", width,
                     f->n_features);
        return -1;
    }
    if (max_bidders < 1 || max_bidders > INT32_MAX / 16 || max_frame < 1) {
        PyErr_SetString(PyExc_ValueError, "max_bidders and max_frame must be positive");
        return -1;
    }
    if (!PyCallable_Check(loads) || (clock != Py_None && !PyCallable_Check(clock))) {
        PyErr_SetString(PyExc_TypeError, "loads must be callable, clock callable or None");
        return -1;
    }
    if (sp_read_bounds(latency, "latency_bounds", self->latency_bounds, &self->n_latency_bounds) <
            0 ||
        sp_read_bounds(bidder, "bidder_bounds", self->bidder_bounds, &self->n_bidder_bounds) < 0) {
        return -1;
    }
    score_path_clear(self);
    self->rows = PyMem_Malloc(sizeof(float) * (size_t)(max_bidders * width));
    self->probabilities = PyMem_Malloc(sizeof(float) * (size_t)max_bidders);
    self->table_rows = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)max_bidders);
    self->layout_name = PyUnicode_InternFromString("layout");
    if (self->rows == NULL || self->probabilities == NULL || self->table_rows == NULL ||
        self->layout_name == NULL) {
        score_path_clear(self);
        PyErr_NoMemory();
        return -1;
    }
    Py_INCREF(encoder);
    Py_INCREF(forest);
    Py_INCREF(known);
    Py_INCREF(loads);
    Py_INCREF(clock);
    Py_INCREF(reply_head);
    self->encoder = e;
    self->forest = f;
    self->known = known;
    self->loads = loads;
    self->select = select;
    self->clock = clock;
    self->reply_head = reply_head;
    self->max_frame = max_frame;
    self->max_bidders = max_bidders;
    self->calls = 0;
    self->latency_seconds = self->bidders_total = 0.0;
    memset(self->latency_counts, 0, sizeof self->latency_counts);
    memset(self->bidder_counts, 0, sizeof self->bidder_counts);
    return 0;
}

static void score_path_dealloc(ScorePathObject *self) {
    score_path_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef score_path_methods[] = {
    {"call", (PyCFunction)(void (*)(void))score_path_call, METH_FASTCALL,
     "call(data, write) -> bool: answer `data` if it is one known `score` call (see the "
     "module's score_path.h)."},
    {"take_counts", (PyCFunction)score_path_take_counts, METH_NOARGS,
     "take_counts() -> (calls, latency_counts, latency_seconds, bidder_counts, bidders), then "
     "zero."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScorePathType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "model_server.native._forest.ScorePath",
    .tp_doc = "Known `score` calls answered in one native step.",
    .tp_basicsize = sizeof(ScorePathObject),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)score_path_init,
    .tp_dealloc = (destructor)score_path_dealloc,
    .tp_methods = score_path_methods,
};

static int score_path_add_to(PyObject *module) {
    return add_type(module, "ScorePath", &ScorePathType);
}

#endif
