/* Byte work of the `score` hot path that Python does slowly: model_server/fast_codec.py holds
 * the reference implementation of each function here, and tests compare the two. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* A strict CALL message for "score" up to its seqid: version | CALL, name length, name. */
static const unsigned char SCORE_CALL_HEAD[] = {0x80, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00,
                                                0x05, 's',  'c',  'o',  'r',  'e'};
#define HEAD_LEN ((Py_ssize_t)sizeof SCORE_CALL_HEAD)
/* After the seqid: field 1 (bid_request) is a string. */
static const unsigned char BID_REQUEST_FIELD[] = {0x0b, 0x00, 0x01};
/* Header, seqid, field header, string length: where the bid request's bytes start. */
#define PLAIN_START (HEAD_LEN + 4 + 3 + 4)

static int32_t read_i32(const unsigned char *p) {
    return (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
                     (uint32_t)p[3]);
}

PyDoc_STRVAR(known_score_call_doc,
             "known_score_call(frame, known) -> (seqid, bid_request, value) | None\n\n"
             "fast_codec.known_score_call_py in one call: a plainly written `score` call whose\n"
             "bytes after the bid request are a key of `known`, with that key's value.");

static PyObject *known_score_call(PyObject *Py_UNUSED(module), PyObject *const *args,
                                  Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "known_score_call takes (frame, known)");
        return NULL;
    }
    PyObject *frame = args[0];
    PyObject *known = args[1];
    if (!PyBytes_Check(frame) || !PyDict_Check(known)) {
        PyErr_SetString(PyExc_TypeError, "known_score_call takes (bytes, dict)");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(frame);
    Py_ssize_t len = PyBytes_GET_SIZE(frame);
    if (len < PLAIN_START || memcmp(p, SCORE_CALL_HEAD, HEAD_LEN) != 0 ||
        memcmp(p + HEAD_LEN + 4, BID_REQUEST_FIELD, sizeof BID_REQUEST_FIELD) != 0) {
        Py_RETURN_NONE;
    }
    int32_t n = read_i32(p + PLAIN_START - 4);
    if (n < 0 || n > len - PLAIN_START) {
        Py_RETURN_NONE;
    }
    Py_ssize_t end = PLAIN_START + n;
    PyObject *tail = PyBytes_FromStringAndSize((const char *)p + end, len - end);
    if (tail == NULL) {
        return NULL;
    }
    PyObject *value = PyDict_GetItemWithError(known, tail); /* borrowed */
    Py_DECREF(tail);
    if (value == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    Py_INCREF(value);
    PyObject *bid_request = PyBytes_FromStringAndSize((const char *)p + PLAIN_START, n);
    PyObject *seqid = PyLong_FromLong((long)read_i32(p + HEAD_LEN));
    if (bid_request == NULL || seqid == NULL) {
        Py_XDECREF(bid_request);
        Py_XDECREF(seqid);
        Py_DECREF(value);
        return NULL;
    }
    PyObject *result = PyTuple_New(3);
    if (result == NULL) {
        Py_DECREF(bid_request);
        Py_DECREF(seqid);
        Py_DECREF(value);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, seqid); /* the tuple takes the references */
    PyTuple_SET_ITEM(result, 1, bid_request);
    PyTuple_SET_ITEM(result, 2, value);
    return result;
}

static PyMethodDef codec_methods[] = {
    {"known_score_call", (PyCFunction)(void (*)(void))known_score_call, METH_FASTCALL,
     known_score_call_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef codec_module = {
    PyModuleDef_HEAD_INIT,
    "_codec",
    "Thrift byte work of the score hot path.",
    -1,
    codec_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__codec(void) { return PyModule_Create(&codec_module); }
