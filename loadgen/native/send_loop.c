/* The load generator's steady-state sending loop in C (loadgen/engine.py, Worker._run_native).
 *
 * It works on the worker's own Python objects (each Connection's `inflight` dict, `out`
 * bytearray and `rbuf`, the Recorder's per-second lists), so Python can take over at any
 * point: every call leaves them exactly as the Python loop (Worker._run_python, the
 * reference) would. The common case runs here: due requests appended to a connection and
 * sent, epoll waits, replies read, matched by sequence id and recorded. Everything rare is
 * handed back: an event on a connection still connecting comes back as EVENT; a reply that
 * is not a success, or a malformed frame, goes to Worker._on_data; a closed or failing
 * socket to Worker._on_eof / Worker._on_socket_error; no connection with room to
 * Worker._overloaded or the backlog. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>

/* What advance() returns: why it handed control back. */
enum { HOUSEKEEPING = 0, CHUNK_END = 1, EVENT = 2, CHANGED = 3 };

#define RECV_BYTES     (1 << 18)
#define MAX_FRAME      (64 << 20)
#define MIN_FRAME_BODY 13 /* header, empty name, seqid, STOP */
#define SEQ_MASK       0x7FFFFFFF
#define REPLY_VT       ((int32_t)0x80010002u)
#define T_STRUCT       12
#define MAX_EVENTS     256
#define FD_PYTHON      (-2) /* an fd Python must look at (a connect in progress) */

/* One connection, as seen at the start of an advance() call (borrowed references). */
typedef struct {
    PyObject *conn;
    PyObject *inflight; /* dict: seq -> intended time */
    PyObject *out;      /* bytearray: frames not yet taken by the kernel */
    int fd;
    int up;
    int writing;
    int dirty;
} Slot;

typedef struct {
    PyObject_HEAD
        /* set at construction */
        PyObject *worker;
    PyObject *conns;         /* list of Connection */
    PyObject *frames;        /* list of bytes */
    PyObject *sec_lat;       /* list of array('q') */
    PyObject *sec_sent;      /* list of int */
    PyObject *sec_late;      /* list of int */
    PyObject *sec_drop;      /* list of int */
    PyObject *completions;   /* list of int */
    PyObject *count_quality; /* Recorder.count_quality */
    PyObject *backlog;       /* Worker.backlog (deque) */
    int epfd;
    int state_up, state_connecting;
    double t0, warm, late_threshold, max_lag, spin_below;
    Py_ssize_t max_inflight, nsec, quality_every, seq_offset, send_batch;
    /* the current chunk of the schedule */
    Py_buffer idx, times, items;
    int have_chunk;
    Py_ssize_t k, n;
    double nxt;
    int done; /* the schedule is used up */
    Py_ssize_t rr;
    /* counters Python drains (members) */
    long long sent, late, dropped, warmup_sent, ok, stray;
    double max_lag_seen, last_completion, now;
    int event_fd, event_mask;
    /* scratch */
    Slot *slots;
    Py_ssize_t nslots, slots_cap;
    int *fd_slot;
    int fd_cap;
    unsigned char *rbuf;
    Py_ssize_t rbuf_cap;
} SendLoop;

static PyObject *str_inflight, *str_out, *str_rbuf, *str_state, *str_fd, *str_writing,
    *str_answered, *str_append, *str_on_data, *str_on_eof, *str_on_socket_error, *str_overloaded,
    *str_empty_bytes, *str_empty;

static inline double mono_now(const SendLoop *self) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* time.perf_counter's clock on Linux */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 - self->t0;
}

static inline int32_t read_i32(const unsigned char *p) {
    return (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
                     (uint32_t)p[3]);
}

static inline void write_i32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* list[i] += 1 for a list of ints */
static int list_incr(PyObject *list, Py_ssize_t i) {
    PyObject *old = PyList_GET_ITEM(list, i);
    long long v = PyLong_AsLongLong(old);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    PyObject *value = PyLong_FromLongLong(v + 1);
    if (value == NULL) {
        return -1;
    }
    PyList_SET_ITEM(list, i, value);
    Py_DECREF(old);
    return 0;
}

static int get_int_attr(PyObject *obj, PyObject *name, long *value) {
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL) {
        return -1;
    }
    *value = PyLong_AsLong(v);
    Py_DECREF(v);
    return (*value == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* A buffer format of one native-order item of one of `codes` ("@", "=" or "<" allowed). */
static int format_is(const char *format, const char *codes) {
    if (format == NULL) {
        return 0;
    }
    if (*format == '@' || *format == '=' || *format == '<') {
        format++;
    }
    return format[0] != '\0' && format[1] == '\0' && strchr(codes, format[0]) != NULL;
}

/* ---- construction ------------------------------------------------------------------------ */

static void release_chunk(SendLoop *self) {
    if (self->have_chunk) {
        PyBuffer_Release(&self->idx);
        PyBuffer_Release(&self->times);
        PyBuffer_Release(&self->items);
        self->have_chunk = 0;
    }
    self->k = self->n = 0;
}

/* The Python objects a SendLoop holds, for the garbage collector. */
// clang-format off
#define SL_OBJECTS(X)                                                                          \
    X(worker) X(conns) X(frames) X(sec_lat) X(sec_sent) X(sec_late) X(sec_drop) X(completions) \
    X(count_quality) X(backlog)
// clang-format on

static int SendLoop_traverse(SendLoop *self, visitproc visit, void *arg) {
#define SL_VISIT(name) Py_VISIT(self->name);
    SL_OBJECTS(SL_VISIT)
#undef SL_VISIT
    return 0;
}

static int SendLoop_clear(SendLoop *self) {
#define SL_CLEAR(name) Py_CLEAR(self->name);
    SL_OBJECTS(SL_CLEAR)
#undef SL_CLEAR
    return 0;
}

static void SendLoop_dealloc(SendLoop *self) {
    PyObject_GC_UnTrack(self);
    release_chunk(self);
    SendLoop_clear(self);
    PyMem_Free(self->slots);
    PyMem_Free(self->fd_slot);
    PyMem_Free(self->rbuf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int SendLoop_init(SendLoop *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"worker",      "epfd",          "t0",           "frames",
                             "sec_lat",     "sec_sent",      "sec_late",     "sec_drop",
                             "completions", "count_quality", "warm",         "late_threshold",
                             "max_lag",     "spin_below",    "max_inflight", "quality_every",
                             "seq_offset",  "send_batch",    "state_up",     "state_connecting",
                             NULL};
    PyObject *worker, *frames, *sec_lat, *sec_sent, *sec_late, *sec_drop, *completions,
        *count_quality;
    int epfd, up, connecting;
    double t0, warm, late_threshold, max_lag, spin_below;
    Py_ssize_t max_inflight, quality_every, seq_offset, send_batch;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OidO!O!O!O!O!O!Oddddnnnnii", kwlist, &worker,
                                     &epfd, &t0, &PyList_Type, &frames, &PyList_Type, &sec_lat,
                                     &PyList_Type, &sec_sent, &PyList_Type, &sec_late, &PyList_Type,
                                     &sec_drop, &PyList_Type, &completions, &count_quality, &warm,
                                     &late_threshold, &max_lag, &spin_below, &max_inflight,
                                     &quality_every, &seq_offset, &send_batch, &up, &connecting)) {
        return -1;
    }
    if (send_batch < 1) {
        PyErr_SetString(PyExc_ValueError, "send_batch must be >= 1");
        return -1;
    }
    Py_ssize_t nsec = PyList_GET_SIZE(sec_lat);
    if (nsec < 1 || PyList_GET_SIZE(sec_sent) != nsec || PyList_GET_SIZE(sec_late) != nsec ||
        PyList_GET_SIZE(sec_drop) != nsec || PyList_GET_SIZE(completions) < 1) {
        PyErr_SetString(PyExc_ValueError, "per-second lists must have one entry per second");
        return -1;
    }
    Py_ssize_t nframes = PyList_GET_SIZE(frames);
    for (Py_ssize_t i = 0; i < nframes; i++) {
        PyObject *f = PyList_GET_ITEM(frames, i);
        if (!PyBytes_Check(f) || PyBytes_GET_SIZE(f) < seq_offset + 4) {
            PyErr_SetString(PyExc_ValueError, "every frame must be bytes holding a sequence id");
            return -1;
        }
    }
    PyObject *conns = PyObject_GetAttrString(worker, "conns");
    if (conns == NULL) {
        return -1;
    }
    if (!PyList_Check(conns)) {
        Py_DECREF(conns);
        PyErr_SetString(PyExc_TypeError, "worker.conns must be a list");
        return -1;
    }
    PyObject *backlog = PyObject_GetAttrString(worker, "backlog");
    if (backlog == NULL) {
        Py_DECREF(conns);
        return -1;
    }
    SendLoop_clear(self);
    Py_INCREF(worker);
    Py_INCREF(frames);
    Py_INCREF(sec_lat);
    Py_INCREF(sec_sent);
    Py_INCREF(sec_late);
    Py_INCREF(sec_drop);
    Py_INCREF(completions);
    Py_INCREF(count_quality);
    self->worker = worker;
    self->conns = conns;
    self->backlog = backlog;
    self->frames = frames;
    self->sec_lat = sec_lat;
    self->sec_sent = sec_sent;
    self->sec_late = sec_late;
    self->sec_drop = sec_drop;
    self->completions = completions;
    self->count_quality = count_quality;
    self->epfd = epfd;
    self->t0 = t0;
    self->warm = warm;
    self->late_threshold = late_threshold;
    self->max_lag = max_lag;
    self->spin_below = spin_below;
    self->max_inflight = max_inflight;
    self->quality_every = quality_every;
    self->seq_offset = seq_offset;
    self->send_batch = send_batch;
    self->nsec = nsec;
    self->state_up = up;
    self->state_connecting = connecting;
    self->nxt = INFINITY;
    self->done = 0;
    if (self->rbuf == NULL) {
        self->rbuf_cap = 2 * RECV_BYTES;
        self->rbuf = PyMem_Malloc((size_t)self->rbuf_cap);
        if (self->rbuf == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

/* ---- the schedule ------------------------------------------------------------------------ */

static PyObject *SendLoop_set_chunk(SendLoop *self, PyObject *args) {
    PyObject *idx, *times, *items;
    if (!PyArg_ParseTuple(args, "OOO", &idx, &times, &items)) {
        return NULL;
    }
    release_chunk(self);
    if (PyObject_GetBuffer(idx, &self->idx, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(times, &self->times, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&self->idx);
        return NULL;
    }
    if (PyObject_GetBuffer(items, &self->items, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&self->idx);
        PyBuffer_Release(&self->times);
        return NULL;
    }
    self->have_chunk = 1;
    Py_ssize_t n = self->idx.len / 8;
    if (self->idx.itemsize != 8 || self->times.itemsize != 8 || self->items.itemsize != 8 ||
        self->times.len / 8 != n || self->items.len / 8 != n ||
        !format_is(self->idx.format, "ql") || !format_is(self->times.format, "d") ||
        !format_is(self->items.format, "ql")) {
        release_chunk(self);
        PyErr_SetString(PyExc_TypeError,
                        "set_chunk takes (int64 indices, float64 times, int64 frame numbers)");
        return NULL;
    }
    Py_ssize_t nframes = PyList_GET_SIZE(self->frames);
    const int64_t *it = self->items.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (it[i] < 0 || it[i] >= nframes) {
            release_chunk(self);
            PyErr_SetString(PyExc_IndexError, "frame number out of range");
            return NULL;
        }
    }
    self->n = n;
    self->k = 0;
    self->done = n == 0;
    self->nxt = n ? ((const double *)self->times.buf)[0] : INFINITY;
    Py_RETURN_NONE;
}

/* ---- connections ------------------------------------------------------------------------- */

/* Look at every connection as it is now (Python may have changed them since the last call). */
static int snapshot(SendLoop *self) {
    Py_ssize_t n = PyList_GET_SIZE(self->conns);
    if (n > self->slots_cap) {
        Slot *slots = PyMem_Realloc(self->slots, (size_t)n * sizeof(Slot));
        if (slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->slots = slots;
        self->slots_cap = n;
    }
    self->nslots = n;
    int max_fd = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Slot *s = &self->slots[i];
        PyObject *conn = PyList_GET_ITEM(self->conns, i);
        long state, fd, writing;
        if (get_int_attr(conn, str_state, &state) < 0 || get_int_attr(conn, str_fd, &fd) < 0 ||
            get_int_attr(conn, str_writing, &writing) < 0) {
            return -1;
        }
        s->conn = conn;
        s->fd = (int)fd;
        s->up = state == self->state_up && fd >= 0;
        s->writing = writing != 0;
        s->dirty = 0;
        s->inflight = s->out = NULL;
        if (state == self->state_up || state == self->state_connecting) {
            if (fd > max_fd) {
                max_fd = (int)fd;
            }
        }
        if (s->up) {
            /* borrowed: both objects live as long as the connection (cleared in place) */
            PyObject *inflight = PyObject_GetAttr(conn, str_inflight);
            PyObject *out = inflight ? PyObject_GetAttr(conn, str_out) : NULL;
            Py_XDECREF(inflight);
            Py_XDECREF(out);
            if (out == NULL) {
                return -1;
            }
            if (!PyDict_Check(inflight) || !PyByteArray_Check(out)) {
                PyErr_SetString(PyExc_TypeError, "Connection.inflight/out: dict/bytearray");
                return -1;
            }
            s->inflight = inflight;
            s->out = out;
            /* bytes left from a call cut short (an exception) go out first; a connection
               waiting for EPOLLOUT is flushed when that comes */
            s->dirty = !s->writing && PyByteArray_GET_SIZE(out) > 0;
        }
    }
    if (max_fd >= self->fd_cap) {
        int cap = max_fd + 64;
        int *table = PyMem_Realloc(self->fd_slot, (size_t)cap * sizeof(int));
        if (table == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->fd_slot = table;
        self->fd_cap = cap;
    }
    for (int i = 0; i < self->fd_cap; i++) {
        self->fd_slot[i] = -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Slot *s = &self->slots[i];
        if (s->up) {
            self->fd_slot[s->fd] = (int)i;
        } else if (s->fd >= 0) {
            self->fd_slot[s->fd] = FD_PYTHON; /* connecting: Python finishes it */
        }
    }
    return 0;
}

/* Worker.<method>(conn, arg, now): Python handles a connection's trouble. */
static int call_worker(SendLoop *self, PyObject *method, PyObject *conn, PyObject *arg) {
    PyObject *now = PyFloat_FromDouble(self->now);
    if (now == NULL) {
        return -1;
    }
    PyObject *r = arg ? PyObject_CallMethodObjArgs(self->worker, method, conn, arg, now, NULL)
                      : PyObject_CallMethodObjArgs(self->worker, method, conn, now, NULL);
    Py_DECREF(now);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Worker._on_socket_error(conn, code, now): 1 (Python changed the connections) or -1. */
static int socket_error(SendLoop *self, Slot *s, int code) {
    PyObject *number = PyLong_FromLong(code);
    if (number == NULL) {
        return -1;
    }
    int r = call_worker(self, str_on_socket_error, s->conn, number);
    Py_DECREF(number);
    return r < 0 ? -1 : 1;
}

/* Send what a connection has buffered. 1: Python changed the connections (socket error). */
static int flush(SendLoop *self, Slot *s) {
    s->dirty = 0;
    Py_ssize_t len = PyByteArray_GET_SIZE(s->out);
    if (len == 0) {
        return 0;
    }
    ssize_t n = send(s->fd, PyByteArray_AS_STRING(s->out), (size_t)len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            n = 0;
        } else {
            return socket_error(self, s, errno);
        }
    }
    if (n > 0 && PySequence_DelSlice(s->out, 0, n) < 0) {
        return -1;
    }
    int writing = n < len;
    if (writing != s->writing) { /* epoll_ctl only when it changes */
        struct epoll_event ev = {.events = EPOLLIN | (writing ? EPOLLOUT : 0), .data.fd = s->fd};
        if (epoll_ctl(self->epfd, EPOLL_CTL_MOD, s->fd, &ev) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        s->writing = writing;
        if (PyObject_SetAttr(s->conn, str_writing, writing ? Py_True : Py_False) < 0) {
            return -1;
        }
    }
    return 0;
}

static int flush_dirty(SendLoop *self) {
    for (Py_ssize_t i = 0; i < self->nslots; i++) {
        Slot *s = &self->slots[i];
        if (s->dirty) {
            int r = flush(self, s);
            if (r != 0) {
                return r;
            }
        }
    }
    return 0;
}

/* Worker._pick: the open connection with the fewest calls waiting, if one has room. */
static Slot *pick(SendLoop *self) {
    Slot *best = NULL;
    Py_ssize_t best_n = 0;
    for (Py_ssize_t i = 0; i < self->nslots; i++) {
        Slot *s = &self->slots[i];
        if (!s->up) {
            continue;
        }
        Py_ssize_t n = PyDict_GET_SIZE(s->inflight);
        if (n < self->max_inflight && (best == NULL || n < best_n)) {
            best = s;
            best_n = n;
        }
    }
    return best;
}

static int any_up(const SendLoop *self) {
    for (Py_ssize_t i = 0; i < self->nslots; i++) {
        if (self->slots[i].up) {
            return 1;
        }
    }
    return 0;
}

/* ---- sending ----------------------------------------------------------------------------- */

static inline Py_ssize_t second_of(const SendLoop *self, double t) {
    Py_ssize_t s = (Py_ssize_t)(t - self->warm);
    return s < self->nsec ? s : self->nsec - 1;
}

/* Append request k of the chunk to a connection and remember it in flight. */
static int enqueue(SendLoop *self, Slot *s, long long seq, double t, Py_ssize_t item) {
    PyObject *frame = PyList_GET_ITEM(self->frames, item);
    Py_ssize_t flen = PyBytes_GET_SIZE(frame);
    Py_ssize_t at = PyByteArray_GET_SIZE(s->out);
    if (PyByteArray_Resize(s->out, at + flen) < 0) {
        return -1;
    }
    unsigned char *dst = (unsigned char *)PyByteArray_AS_STRING(s->out) + at;
    memcpy(dst, PyBytes_AS_STRING(frame), (size_t)flen);
    write_i32(dst + self->seq_offset, (uint32_t)seq);
    PyObject *key = PyLong_FromLongLong(seq);
    PyObject *value = key ? PyFloat_FromDouble(t) : NULL;
    int r = value ? PyDict_SetItem(s->inflight, key, value) : -1;
    Py_XDECREF(key);
    Py_XDECREF(value);
    s->dirty = 1;
    return r;
}

/* The requests due by now, at most send_batch of them (Worker._run_python's inner loop).
 * 1: the chunk is used up. */
static int send_due(SendLoop *self, double now) {
    const int64_t *idx = self->idx.buf;
    const double *times = self->times.buf;
    const int64_t *items = self->items.buf;
    for (Py_ssize_t budget = self->send_batch; self->nxt <= now && budget; budget--) {
        double nxt = self->nxt;
        double lag = now - nxt;
        if (lag > self->max_lag_seen) {
            self->max_lag_seen = lag;
        }
        if (lag > self->max_lag) { /* too far behind: drop, and say so */
            if (nxt >= self->warm) {
                self->dropped++;
                if (list_incr(self->sec_drop, second_of(self, nxt)) < 0) {
                    return -1;
                }
            }
        } else {
            long long seq = (long long)(idx[self->k] & SEQ_MASK);
            Slot *robin = self->nslots ? &self->slots[self->rr] : NULL;
            if (self->nslots) {
                self->rr = self->rr + 1 < self->nslots ? self->rr + 1 : 0;
            }
            Slot *s = (robin && robin->up && PyDict_GET_SIZE(robin->inflight) < self->max_inflight)
                          ? robin
                          : pick(self);
            if (s != NULL) {
                if (enqueue(self, s, seq, nxt, (Py_ssize_t)items[self->k]) < 0) {
                    return -1;
                }
                if (nxt >= self->warm) {
                    Py_ssize_t sec = second_of(self, nxt);
                    self->sent++;
                    if (list_incr(self->sec_sent, sec) < 0) {
                        return -1;
                    }
                    if (lag > self->late_threshold) {
                        self->late++;
                        if (list_incr(self->sec_late, sec) < 0) {
                            return -1;
                        }
                    }
                } else {
                    self->warmup_sent++;
                }
            } else {
                PyObject *t = PyFloat_FromDouble(nxt);
                PyObject *at = t ? PyFloat_FromDouble(now) : NULL;
                PyObject *r = NULL;
                if (at != NULL) {
                    if (any_up(self)) {
                        r = PyObject_CallMethodObjArgs(self->worker, str_overloaded, t, at, NULL);
                    } else { /* wait for a connection, at most --timeout */
                        PyObject *entry = Py_BuildValue("(LOO)", seq, t, str_empty);
                        r = entry
                                ? PyObject_CallMethodObjArgs(self->backlog, str_append, entry, NULL)
                                : NULL;
                        Py_XDECREF(entry);
                    }
                }
                Py_XDECREF(t);
                Py_XDECREF(at);
                if (r == NULL) {
                    return -1;
                }
                Py_DECREF(r);
            }
        }
        self->k++;
        if (self->k == self->n) {
            self->nxt = INFINITY;
            return 1;
        }
        self->nxt = times[self->k];
    }
    return 0;
}

/* ---- replies ----------------------------------------------------------------------------- */

static int set_rbuf(Slot *s, const unsigned char *p, Py_ssize_t n) {
    PyObject *rest = n ? PyBytes_FromStringAndSize((const char *)p, n) : str_empty_bytes;
    if (rest == NULL) {
        return -1;
    }
    if (!n) {
        Py_INCREF(rest);
    }
    int r = PyObject_SetAttr(s->conn, str_rbuf, rest);
    Py_DECREF(rest);
    return r;
}

static int record(SendLoop *self, double t, double now) {
    long long us = (long long)((now - t) * 1e6);
    PyObject *arr = PyList_GET_ITEM(self->sec_lat, second_of(self, t));
    PyObject *value = PyLong_FromLongLong(us);
    if (value == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallMethodOneArg(arr, str_append, value);
    Py_DECREF(value);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    self->ok++;
    Py_ssize_t last = PyList_GET_SIZE(self->completions) - 1;
    Py_ssize_t c = (Py_ssize_t)(now - self->warm);
    if (list_incr(self->completions, c < last ? c : last) < 0) {
        return -1;
    }
    if (now - self->warm > self->last_completion) {
        self->last_completion = now - self->warm;
    }
    return 0;
}

/* Worker._on_data for the frames it expects: every complete success reply is matched and
 * recorded; from the first frame that is anything else, Python takes the rest. */
static int on_data(SendLoop *self, Slot *s, const unsigned char *buf, Py_ssize_t end, double now) {
    Py_ssize_t pos = 0;
    int answered = 0;
    while (end - pos >= 17) {
        int32_t flen = read_i32(buf + pos);
        int32_t vt = read_i32(buf + pos + 4);
        int32_t nlen = read_i32(buf + pos + 8);
        if (flen < MIN_FRAME_BODY || flen > MAX_FRAME || nlen < 0 || nlen >= flen) {
            goto python; /* malformed: Python names the error and closes the connection */
        }
        if (pos + 4 + (Py_ssize_t)flen > end) {
            break;
        }
        if (vt != REPLY_VT || 12 + (Py_ssize_t)nlen + 7 > 4 + (Py_ssize_t)flen) {
            goto python;
        }
        const unsigned char *r = buf + pos + 12 + nlen;
        int ftype = r[4];
        int fid = (int16_t)((uint16_t)r[5] << 8 | r[6]);
        if (ftype != T_STRUCT || fid != 0) {
            goto python; /* a declared exception or something odd */
        }
        long long seq = (long long)read_i32(r);
        PyObject *key = PyLong_FromLongLong(seq);
        if (key == NULL) {
            return -1;
        }
        PyObject *t_obj = PyDict_GetItemWithError(s->inflight, key); /* borrowed */
        if (t_obj == NULL) {
            Py_DECREF(key);
            if (PyErr_Occurred()) {
                return -1;
            }
            self->stray++; /* its request was already given up (timeout) */
        } else {
            double t = PyFloat_AS_DOUBLE(t_obj);
            int del = PyDict_DelItem(s->inflight, key);
            Py_DECREF(key);
            if (del < 0) {
                return -1;
            }
            if (t >= self->warm) {
                if (record(self, t, now) < 0) {
                    return -1;
                }
                if (self->quality_every && seq % self->quality_every == 0) {
                    PyObject *frame =
                        PyBytes_FromStringAndSize((const char *)buf + pos, 4 + (Py_ssize_t)flen);
                    if (frame == NULL) {
                        return -1;
                    }
                    PyObject *res = PyObject_CallFunction(self->count_quality, "OnL", frame,
                                                          (Py_ssize_t)(16 + nlen + 3), seq);
                    Py_DECREF(frame);
                    if (res == NULL) {
                        return -1;
                    }
                    Py_DECREF(res);
                }
            }
        }
        answered = 1;
        pos += 4 + (Py_ssize_t)flen;
    }
    if (answered && PyObject_SetAttr(s->conn, str_answered, Py_True) < 0) {
        return -1;
    }
    return set_rbuf(s, buf + pos, end - pos) < 0 ? -1 : 0;

python:
    if (answered && PyObject_SetAttr(s->conn, str_answered, Py_True) < 0) {
        return -1;
    }
    if (set_rbuf(s, buf + pos, end - pos) < 0 ||
        call_worker(self, str_on_data, s->conn, str_empty_bytes) < 0) {
        return -1;
    }
    return 1;
}

/* Read what one connection has. 1: Python changed the connections. */
static int on_readable(SendLoop *self, Slot *s, double now) {
    PyObject *rest = PyObject_GetAttr(s->conn, str_rbuf);
    if (rest == NULL) {
        return -1;
    }
    if (!PyBytes_Check(rest)) {
        Py_DECREF(rest);
        PyErr_SetString(PyExc_TypeError, "Connection.rbuf must be bytes");
        return -1;
    }
    Py_ssize_t have = PyBytes_GET_SIZE(rest);
    if (have + RECV_BYTES > self->rbuf_cap) {
        Py_ssize_t cap = have + RECV_BYTES;
        unsigned char *grown = PyMem_Realloc(self->rbuf, (size_t)cap);
        if (grown == NULL) {
            Py_DECREF(rest);
            PyErr_NoMemory();
            return -1;
        }
        self->rbuf = grown;
        self->rbuf_cap = cap;
    }
    memcpy(self->rbuf, PyBytes_AS_STRING(rest), (size_t)have);
    Py_DECREF(rest);
    ssize_t n = recv(s->fd, self->rbuf + have, RECV_BYTES, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return 0;
        }
        return socket_error(self, s, errno);
    }
    if (n == 0) {
        return call_worker(self, str_on_eof, s->conn, NULL) < 0 ? -1 : 1;
    }
    return on_data(self, s, self->rbuf, have + n, now);
}

/* ---- the loop ---------------------------------------------------------------------------- */

static int wait_events(SendLoop *self, struct epoll_event *events, double wait) {
    int n;
    if (wait < self->spin_below || wait <= 0.0) {
        n = epoll_wait(self->epfd, events, MAX_EVENTS, 0); /* busy: read replies as they land */
        if (n == 0) {
            /* let other threads (a multiprocessing queue's feeder) run, as Python's poll does */
            Py_BEGIN_ALLOW_THREADS Py_END_ALLOW_THREADS
        }
    } else {
        Py_BEGIN_ALLOW_THREADS if (wait > 0.0015) {
            n = epoll_wait(self->epfd, events, MAX_EVENTS, (int)ceil((wait - 0.001) * 1000.0));
        }
        else { /* epoll's timeout is in ms; ppoll's in ns */
            struct pollfd p = {.fd = self->epfd, .events = POLLIN};
            struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(wait * 1e9)};
            n = ppoll(&p, 1, &ts, NULL);
            if (n > 0) {
                n = epoll_wait(self->epfd, events, MAX_EVENTS, 0);
            }
        }
        Py_END_ALLOW_THREADS
    }
    if (n < 0) {
        if (errno == EINTR) {
            return 0;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return n;
}

/* Handle what epoll reported; EVENT or CHANGED when Python must act, -1 to go on. */
static int on_events(SendLoop *self, struct epoll_event *events, int n, double now) {
    for (int i = 0; i < n; i++) {
        int fd = events[i].data.fd;
        unsigned ev = events[i].events;
        int where = fd >= 0 && fd < self->fd_cap ? self->fd_slot[fd] : -1;
        if (where == -1) {
            continue; /* not a connection any more */
        }
        if (where == FD_PYTHON) {
            self->event_fd = fd;
            self->event_mask = (int)ev;
            return EVENT; /* level-triggered: what is left of the batch is reported again */
        }
        Slot *s = &self->slots[where];
        if (ev & EPOLLOUT) {
            int r = flush(self, s);
            if (r != 0) {
                return r < 0 ? -2 : CHANGED;
            }
        }
        if (ev & ~(unsigned)EPOLLOUT) {
            int r = on_readable(self, s, now);
            if (r != 0) {
                return r < 0 ? -2 : CHANGED;
            }
        }
    }
    return -1;
}

PyDoc_STRVAR(advance_doc,
             "advance(until) -> status\n\n"
             "Send, wait and read until `until` (seconds on the run's clock) or until Python\n"
             "must act: HOUSEKEEPING (until reached), CHUNK_END (set the next chunk), EVENT\n"
             "(event_fd/event_mask for Worker._on_event) or CHANGED (connections changed).\n"
             "`now` holds the time of the last step.");

static PyObject *SendLoop_advance(SendLoop *self, PyObject *arg) {
    double until = PyFloat_AsDouble(arg);
    if (until == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (snapshot(self) < 0) {
        return NULL;
    }
    if (self->rr >= self->nslots) {
        self->rr = 0;
    }
    struct epoll_event events[MAX_EVENTS];
    int status;
    for (;;) {
        double now = self->now = mono_now(self);
        if (self->have_chunk && self->k < self->n) {
            int r = send_due(self, now);
            if (r < 0) {
                goto error;
            }
            if (r == 1) {
                status = CHUNK_END;
                break;
            }
        }
        int r = flush_dirty(self);
        if (r < 0) {
            goto error;
        }
        if (r == 1) {
            status = CHANGED;
            break;
        }
        if (now >= until) {
            status = HOUSEKEEPING;
            break;
        }
        now = self->now = mono_now(self);
        double wait = (self->nxt < until ? self->nxt : until) - now;
        int n = wait_events(self, events, wait);
        if (n < 0) {
            goto error;
        }
        if (n > 0) {
            self->now = mono_now(self);
            int handled = on_events(self, events, n, self->now);
            if (handled == -2) {
                goto error;
            }
            if (handled >= 0) {
                status = handled;
                break;
            }
        }
        if (PyErr_CheckSignals() < 0) { /* Ctrl-C: Python stops sending */
            goto error;
        }
    }
    /* whatever the reason, nothing appended is left unsent */
    if (status != CHANGED) {
        int r = flush_dirty(self);
        if (r < 0) {
            return NULL;
        }
        if (r == 1) {
            status = CHANGED;
        }
    }
    return PyLong_FromLong(status);

error:
    if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_SystemError, "send loop failed without an exception");
    }
    return NULL; /* what was appended and not sent goes out on the next call */
}

static PyObject *SendLoop_next_request(SendLoop *self, PyObject *Py_UNUSED(ignored)) {
    if (!self->have_chunk || self->k >= self->n) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong(((const int64_t *)self->idx.buf)[self->k]);
}

static PyObject *SendLoop_drain(SendLoop *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *r = Py_BuildValue("(LLLLLL)", self->sent, self->late, self->dropped,
                                self->warmup_sent, self->ok, self->stray);
    if (r != NULL) {
        self->sent = self->late = self->dropped = self->warmup_sent = self->ok = self->stray = 0;
    }
    return r;
}

static PyMethodDef SendLoop_methods[] = {
    {"set_chunk", (PyCFunction)SendLoop_set_chunk, METH_VARARGS,
     "set_chunk(indices, times, frame_numbers): the next part of the schedule (empty: done)"},
    {"advance", (PyCFunction)SendLoop_advance, METH_O, advance_doc},
    {"next_request", (PyCFunction)SendLoop_next_request, METH_NOARGS,
     "the global index of the first request not yet sent in this chunk, or None"},
    {"drain", (PyCFunction)SendLoop_drain, METH_NOARGS,
     "(sent, late, dropped, warmup_sent, ok, stray) since the last drain, then zero them"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef SendLoop_members[] = {
    {"now", T_DOUBLE, offsetof(SendLoop, now), READONLY, "the time of the last step"},
    {"nxt", T_DOUBLE, offsetof(SendLoop, nxt), READONLY, "when the next request is due"},
    {"done", T_INT, offsetof(SendLoop, done), READONLY, "the schedule is used up"},
    {"max_lag_seen", T_DOUBLE, offsetof(SendLoop, max_lag_seen), READONLY,
     "the furthest behind schedule a request was handled"},
    {"last_completion", T_DOUBLE, offsetof(SendLoop, last_completion), READONLY,
     "the latest success, seconds after the warm-up"},
    {"event_fd", T_INT, offsetof(SendLoop, event_fd), READONLY, "EVENT: the fd"},
    {"event_mask", T_INT, offsetof(SendLoop, event_mask), READONLY, "EVENT: its epoll mask"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject SendLoopType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "loadgen.native._send_loop.SendLoop",
    .tp_basicsize = sizeof(SendLoop),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One worker's sending loop over its connections (see loadgen/engine.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)SendLoop_init,
    .tp_dealloc = (destructor)SendLoop_dealloc,
    .tp_traverse = (traverseproc)SendLoop_traverse,
    .tp_clear = (inquiry)SendLoop_clear,
    .tp_methods = SendLoop_methods,
    .tp_members = SendLoop_members,
};

static PyObject *set_timer_slack(PyObject *Py_UNUSED(module), PyObject *arg) {
    long ns = PyLong_AsLong(arg);
    if (ns == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (prctl(PR_SET_TIMERSLACK, (unsigned long)ns, 0, 0, 0) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_timer_slack", set_timer_slack, METH_O,
     "set_timer_slack(ns): how late the kernel may wake this thread from a timed wait"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "_send_loop",
    "The load generator's sending loop in C; loadgen/engine.py holds the Python reference.",
    -1,
    module_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

#define INTERN(var, text)                                                                          \
    do {                                                                                           \
        var = PyUnicode_InternFromString(text);                                                    \
        if (var == NULL) {                                                                         \
            return NULL;                                                                           \
        }                                                                                          \
    } while (0)

PyMODINIT_FUNC PyInit__send_loop(void) {
    INTERN(str_inflight, "inflight");
    INTERN(str_out, "out");
    INTERN(str_rbuf, "rbuf");
    INTERN(str_state, "state");
    INTERN(str_fd, "fd");
    INTERN(str_writing, "writing");
    INTERN(str_answered, "answered");
    INTERN(str_append, "append");
    INTERN(str_on_data, "_on_data");
    INTERN(str_on_eof, "_on_eof");
    INTERN(str_on_socket_error, "_on_socket_error");
    INTERN(str_overloaded, "_overloaded");
    INTERN(str_empty, "");
    str_empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    if (str_empty_bytes == NULL || PyType_Ready(&SendLoopType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&SendLoopType);
    if (PyModule_AddObject(m, "SendLoop", (PyObject *)&SendLoopType) < 0 ||
        PyModule_AddIntConstant(m, "HOUSEKEEPING", HOUSEKEEPING) < 0 ||
        PyModule_AddIntConstant(m, "CHUNK_END", CHUNK_END) < 0 ||
        PyModule_AddIntConstant(m, "EVENT", EVENT) < 0 ||
        PyModule_AddIntConstant(m, "CHANGED", CHANGED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
