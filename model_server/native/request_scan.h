/*
 * A bid request's JSON straight to the part of it the score path reads:
 *
 *   scan_request(json, n, &req) -> 1 with req a new dict, 0 (not handled here), -1 (error set)
 *   select_request(data) -> dict | None        (the same, from Python, for tests)
 *
 * orjson builds every object, string and number of a request, and most of a real request
 * (user agents, IPs, names, `ext` objects, user segments) is never read by the encoder. This
 * parser walks the whole document but builds Python objects only along SCAN_ROOT below: the
 * fields the score path reads (score_path.h: sp_valid_request, request_encode.h: extract, the
 * request id of the reply), each with exactly the value orjson gives it. Everything else is
 * checked and skipped.
 *
 * It must never accept what orjson rejects, so it is stricter, not cleverer: it accepts only
 * RFC 8259 JSON with valid UTF-8, simple escapes and \uXXXX escapes outside the surrogates,
 * integers of up to 18 digits, finite floats and nesting up to SCAN_MAX_DEPTH. For anything
 * else it answers 0 and the caller hands the bytes to orjson, which either parses them (a
 * surrogate pair, a 20-digit integer) or raises the error the client must see. Duplicate keys
 * keep the last value, as a dict built by orjson does. Included once, by forest.c, after
 * request_encode.h (re_str).
 */
#ifndef RTBSERVE_REQUEST_SCAN_H
#define RTBSERVE_REQUEST_SCAN_H

#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define SCAN_MAX_DEPTH      64
#define SCAN_MAX_INT_DIGITS 18 /* always fits a long long */

/* ---- the fields that are built ------------------------------------------------------------ */

enum { SCAN_FULL, SCAN_OBJECT, SCAN_LIST };

typedef struct ScanSchema ScanSchema;
typedef struct {
    const char *name;
    Py_ssize_t len;
    int kind; /* SCAN_FULL: the whole value; SCAN_OBJECT: an object built by
                 `sub` (any other value whole); SCAN_LIST: a list whose object
                 items are built by `sub` (any other value whole) */
    const ScanSchema *sub;
    PyObject **key; /* the interned key (re_str) */
} ScanField;

struct ScanSchema {
    const ScanField *fields;
    int n;
};

#define SCAN_F(n)                                                                                  \
    { #n, sizeof #n - 1, SCAN_FULL, NULL, &re_str.n }
#define SCAN_O(n, s)                                                                               \
    { #n, sizeof #n - 1, SCAN_OBJECT, &(s), &re_str.n }
#define SCAN_L(n, s)                                                                               \
    { #n, sizeof #n - 1, SCAN_LIST, &(s), &re_str.n }
#define SCAN_SCHEMA(name, ...)                                                                     \
    static const ScanField name##_fields[] = {__VA_ARGS__};                                        \
    static const ScanSchema name = {name##_fields,                                                 \
                                    (int)(sizeof name##_fields / sizeof name##_fields[0])}

/* Only the presence of an object is read (imp.native, imp.audio, pmp.deals' items). */
static const ScanSchema SCAN_PRESENT = {NULL, 0};
SCAN_SCHEMA(SCAN_FORMAT, SCAN_F(w), SCAN_F(h));
SCAN_SCHEMA(SCAN_BANNER, SCAN_L(format, SCAN_FORMAT), SCAN_F(w), SCAN_F(h));
SCAN_SCHEMA(SCAN_VIDEO, SCAN_F(maxduration), SCAN_F(rqddurs), SCAN_F(plcmt), SCAN_F(placement));
SCAN_SCHEMA(SCAN_PMP, SCAN_L(deals, SCAN_PRESENT), SCAN_F(private_auction));
SCAN_SCHEMA(SCAN_IMP, SCAN_F(id), SCAN_O(banner, SCAN_BANNER), SCAN_O(video, SCAN_VIDEO),
            SCAN_O(native, SCAN_PRESENT), SCAN_O(audio, SCAN_PRESENT), SCAN_F(bidfloor),
            SCAN_F(bidfloorcur), SCAN_F(secure), SCAN_F(instl), SCAN_O(pmp, SCAN_PMP));
SCAN_SCHEMA(SCAN_PUBLISHER, SCAN_F(id), SCAN_F(cat));
SCAN_SCHEMA(SCAN_CONTENT, SCAN_F(cat));
SCAN_SCHEMA(SCAN_INVENTORY, SCAN_F(domain), SCAN_F(page), SCAN_F(bundle),
            SCAN_O(publisher, SCAN_PUBLISHER), SCAN_F(cat), SCAN_O(content, SCAN_CONTENT));
SCAN_SCHEMA(SCAN_GEO, SCAN_F(country), SCAN_F(region));
SCAN_SCHEMA(SCAN_PLATFORM, SCAN_F(brand));
SCAN_SCHEMA(SCAN_SUA, SCAN_O(platform, SCAN_PLATFORM));
SCAN_SCHEMA(SCAN_DEVICE, SCAN_F(devicetype), SCAN_F(connectiontype), SCAN_F(os),
            SCAN_O(sua, SCAN_SUA), SCAN_F(make), SCAN_O(geo, SCAN_GEO), SCAN_F(ifa), SCAN_F(js),
            SCAN_F(dnt), SCAN_F(lmt));
SCAN_SCHEMA(SCAN_USER, SCAN_F(id), SCAN_F(buyeruid), SCAN_O(geo, SCAN_GEO));
SCAN_SCHEMA(SCAN_REGS_EXT, SCAN_F(gdpr), SCAN_F(us_privacy));
SCAN_SCHEMA(SCAN_REGS, SCAN_F(gdpr), SCAN_F(us_privacy), SCAN_O(ext, SCAN_REGS_EXT), SCAN_F(coppa));
SCAN_SCHEMA(SCAN_ROOT, SCAN_F(id), SCAN_L(imp, SCAN_IMP), SCAN_O(site, SCAN_INVENTORY),
            SCAN_O(app, SCAN_INVENTORY), SCAN_O(dooh, SCAN_INVENTORY), SCAN_O(device, SCAN_DEVICE),
            SCAN_O(user, SCAN_USER), SCAN_O(regs, SCAN_REGS));

/* ---- the parser --------------------------------------------------------------------------- */

/* Every function returns 1 (done), 0 (not handled: the caller falls back, no error set) or
 * -1 (a Python error is set). */
typedef struct {
    const unsigned char *p, *end;
    int depth;
    char *buf; /* scratch for unescaped strings and number text */
    Py_ssize_t cap;
} Scan;

#define SCAN_TRY(call)                                                                             \
    do {                                                                                           \
        int scan_rc_ = (call);                                                                     \
        if (scan_rc_ <= 0) {                                                                       \
            return scan_rc_;                                                                       \
        }                                                                                          \
    } while (0)

static inline void scan_ws(Scan *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')) {
        s->p++;
    }
}

/* Is there a `c` here, after whitespace? Consumes it when there is. */
static inline int scan_take(Scan *s, unsigned char c) {
    scan_ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return 1;
    }
    return 0;
}

/* Length of the valid UTF-8 sequence starting at p (a byte >= 0x80), or 0 (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF). */
static Py_ssize_t scan_utf8_len(const unsigned char *p, const unsigned char *end) {
    const unsigned char c = p[0];
    Py_ssize_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) {
            lo = 0xA0;
        } else if (c == 0xED) {
            hi = 0x9F;
        }
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) {
            lo = 0x90;
        } else if (c == 0xF4) {
            hi = 0x8F;
        }
    } else {
        return 0;
    }
    if (end - p < n || p[1] < lo || p[1] > hi) {
        return 0;
    }
    for (Py_ssize_t i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xBF) {
            return 0;
        }
    }
    return n;
}

static inline int scan_hex(unsigned char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* A string (s->p after its opening quote): [*start, *stop) are its raw bytes and *escaped
 * says whether it holds escapes. The bytes are checked (UTF-8, no control characters, known
 * escapes, no surrogate escapes); s->p ends after the closing quote. */
/* Bytes that stand for themselves inside a string: printable ASCII but '"' and '\\'. */
static unsigned char scan_plain[256];

static void scan_init_tables(void) {
    for (int c = 0x20; c < 0x80; c++) {
        scan_plain[c] = c != '"' && c != '\\';
    }
}

static int scan_string_raw(Scan *s, const unsigned char **start, const unsigned char **stop,
                           int *escaped) {
    const unsigned char *p = s->p, *end = s->end;
    *start = p;
    *escaped = 0;
    while (p < end) {
        while (end - p >= 4 && scan_plain[p[0]] && scan_plain[p[1]] && scan_plain[p[2]] &&
               scan_plain[p[3]]) {
            p += 4;
        }
        while (p < end && scan_plain[*p]) {
            p++;
        }
        if (p == end) {
            break;
        }
        const unsigned char c = *p;
        if (c == '"') {
            *stop = p;
            s->p = p + 1;
            return 1;
        }
        if (c < 0x20) {
            return 0;
        }
        if (c == '\\') {
            *escaped = 1;
            if (end - p < 2) {
                return 0;
            }
            const unsigned char e = p[1];
            if (e == 'u') {
                if (end - p < 6) {
                    return 0;
                }
                int v = 0;
                for (int i = 2; i < 6; i++) {
                    const int h = scan_hex(p[i]);
                    if (h < 0) {
                        return 0;
                    }
                    v = v * 16 + h;
                }
                if (v >= 0xD800 && v <= 0xDFFF) {
                    return 0; /* a surrogate (pair or not): orjson decides */
                }
                p += 6;
            } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
                       e == 'r' || e == 't') {
                p += 2;
            } else {
                return 0;
            }
        } else if (c < 0x80) {
            p++;
        } else {
            const Py_ssize_t n = scan_utf8_len(p, end);
            if (n == 0) {
                return 0;
            }
            p += n;
        }
    }
    return 0; /* unterminated */
}

static int scan_reserve(Scan *s, Py_ssize_t n) {
    if (n <= s->cap) {
        return 1;
    }
    char *grown = PyMem_Realloc(s->buf, (size_t)n);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->buf = grown;
    s->cap = n;
    return 1;
}

/* A checked string's raw bytes as a str. */
static int scan_make_string(Scan *s, const unsigned char *a, const unsigned char *b, int escaped,
                            PyObject **out) {
    if (!escaped) {
        *out = PyUnicode_DecodeUTF8((const char *)a, b - a, "strict");
        return *out == NULL ? -1 : 1;
    }
    SCAN_TRY(scan_reserve(s, b - a)); /* an escape never grows in UTF-8 */
    char *d = s->buf;
    for (const unsigned char *p = a; p < b;) {
        if (*p != '\\') {
            *d++ = (char)*p++;
            continue;
        }
        const unsigned char e = p[1];
        if (e == 'u') {
            int v = 0;
            for (int i = 2; i < 6; i++) {
                v = v * 16 + scan_hex(p[i]);
            }
            if (v < 0x80) {
                *d++ = (char)v;
            } else if (v < 0x800) {
                *d++ = (char)(0xC0 | (v >> 6));
                *d++ = (char)(0x80 | (v & 0x3F));
            } else {
                *d++ = (char)(0xE0 | (v >> 12));
                *d++ = (char)(0x80 | ((v >> 6) & 0x3F));
                *d++ = (char)(0x80 | (v & 0x3F));
            }
            p += 6;
            continue;
        }
        *d++ = e == 'b'   ? '\b'
               : e == 'f' ? '\f'
               : e == 'n' ? '\n'
               : e == 'r' ? '\r'
               : e == 't' ? '\t'
                          : (char)e;
        p += 2;
    }
    *out = PyUnicode_DecodeUTF8(s->buf, d - s->buf, "strict");
    return *out == NULL ? -1 : 1;
}

/* A number (RFC 8259 grammar) at s->p: its end in *stop, *is_int when it has no fraction or
 * exponent. */
static int scan_number_raw(Scan *s, const unsigned char **stop, int *is_int) {
    const unsigned char *p = s->p, *end = s->end;
    *is_int = 1;
    if (p < end && *p == '-') {
        p++;
    }
    if (p < end && *p == '0') {
        p++;
    } else if (p < end && *p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    } else {
        return 0;
    }
    if (p < end && *p == '.') {
        *is_int = 0;
        p++;
        if (!(p < end && *p >= '0' && *p <= '9')) {
            return 0;
        }
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *is_int = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }
        if (!(p < end && *p >= '0' && *p <= '9')) {
            return 0;
        }
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    *stop = p;
    return 1;
}

/* The exactly rounded value of a checked float literal in [a, b), when it is easy: at most
 * 15 significant digits (an exact double) scaled by 10^k, |k| <= 22 (also exact), is one IEEE
 * multiplication or division, itself exactly rounded (Clinger's fast path). 0: do it the
 * slow way. */
static int scan_float_fast(const unsigned char *a, const unsigned char *b, double *out) {
    static const double pow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    const unsigned char *p = a;
    const int negative = *p == '-';
    p += negative;
    uint64_t m = 0;
    int digits = 0, scale = 0;
    for (; p < b && *p >= '0' && *p <= '9'; p++) {
        if (m || *p != '0') {
            if (++digits > 15) {
                return 0;
            }
        }
        m = m * 10 + (uint64_t)(*p - '0');
    }
    if (p < b && *p == '.') {
        for (p++; p < b && *p >= '0' && *p <= '9'; p++) {
            if (m || *p != '0') {
                if (++digits > 15) {
                    return 0;
                }
            }
            m = m * 10 + (uint64_t)(*p - '0');
            scale--;
        }
    }
    if (p < b) { /* an exponent */
        p++;
        int sign = 1, e = 0;
        if (*p == '+' || *p == '-') {
            sign = *p == '-' ? -1 : 1;
            p++;
        }
        for (; p < b; p++) {
            if (e > 1000) {
                return 0;
            }
            e = e * 10 + (*p - '0');
        }
        scale += sign * e;
    }
    if (scale < -22 || scale > 22) {
        return 0;
    }
    double v = (double)m;
    v = scale < 0 ? v / pow10[-scale] : v * pow10[scale];
    *out = negative ? -v : v;
    return 1;
}

/* The value of the checked float literal [a, b); 0 when it is not finite (orjson refuses it). */
static int scan_float(Scan *s, const unsigned char *a, const unsigned char *b, double *out) {
    if (scan_float_fast(a, b, out)) {
        return 1;
    }
    const Py_ssize_t n = b - a;
    SCAN_TRY(scan_reserve(s, n + 1));
    memcpy(s->buf, a, (size_t)n);
    s->buf[n] = '\0';
    char *stop;
    *out = PyOS_string_to_double(s->buf, &stop, NULL); /* correctly rounded */
    if (*out == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return stop == s->buf + n && isfinite(*out);
}

/* A number at s->p, checked (and passed over) as orjson would take it; its value in *out
 * unless out is NULL. */
static int scan_number(Scan *s, PyObject **out) {
    const unsigned char *a = s->p, *b;
    int is_int;
    SCAN_TRY(scan_number_raw(s, &b, &is_int));
    s->p = b;
    if (is_int) {
        const int negative = *a == '-';
        if (b - a - negative > SCAN_MAX_INT_DIGITS) {
            return 0; /* orjson takes up to 64 bits: leave it the longer ones */
        }
        if (out == NULL) {
            return 1;
        }
        long long v = 0;
        for (const unsigned char *p = a + negative; p < b; p++) {
            v = v * 10 + (*p - '0');
        }
        *out = PyLong_FromLongLong(negative ? -v : v);
        return *out == NULL ? -1 : 1;
    }
    double v;
    SCAN_TRY(scan_float(s, a, b, &v));
    if (out == NULL) {
        return 1;
    }
    *out = PyFloat_FromDouble(v);
    return *out == NULL ? -1 : 1;
}

static int scan_literal(Scan *s, const char *word, Py_ssize_t n) {
    if (s->end - s->p < n || memcmp(s->p, word, (size_t)n) != 0) {
        return 0;
    }
    s->p += n;
    return 1;
}

static int scan_skip(Scan *s);
static int scan_build(Scan *s, PyObject **out);
static int scan_select(Scan *s, const ScanSchema *schema, PyObject **out);

/* A list at s->p: object items built by `items` (NULL: every item built whole). */
static int scan_list(Scan *s, const ScanSchema *items, PyObject **out) {
    *out = NULL;
    if (++s->depth > SCAN_MAX_DEPTH) {
        return 0;
    }
    s->p++; /* '[' */
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return -1;
    }
    if (!scan_take(s, ']')) {
        do {
            PyObject *item;
            scan_ws(s);
            int rc = items != NULL && s->p < s->end && *s->p == '{' ? scan_select(s, items, &item)
                                                                    : scan_build(s, &item);
            if (rc <= 0 || (rc = PyList_Append(list, item) == 0 ? 1 : -1) <= 0) {
                Py_XDECREF(item);
                Py_DECREF(list);
                return rc;
            }
            Py_DECREF(item);
        } while (scan_take(s, ','));
        if (!scan_take(s, ']')) {
            Py_DECREF(list);
            return 0;
        }
    }
    s->depth--;
    *out = list;
    return 1;
}

/* Checks and passes over one value. */
static int scan_skip(Scan *s) {
    scan_ws(s);
    if (s->p >= s->end) {
        return 0;
    }
    const unsigned char c = *s->p;
    const unsigned char *a, *b;
    int flag;
    if (c == '"') {
        s->p++;
        return scan_string_raw(s, &a, &b, &flag);
    }
    if (c == '{' || c == '[') {
        if (++s->depth > SCAN_MAX_DEPTH) {
            return 0;
        }
        s->p++;
        const unsigned char close = c == '{' ? '}' : ']';
        if (!scan_take(s, close)) {
            do {
                if (c == '{') {
                    if (!scan_take(s, '"')) {
                        return 0;
                    }
                    SCAN_TRY(scan_string_raw(s, &a, &b, &flag));
                    if (!scan_take(s, ':')) {
                        return 0;
                    }
                }
                SCAN_TRY(scan_skip(s));
            } while (scan_take(s, ','));
            if (!scan_take(s, close)) {
                return 0;
            }
        }
        s->depth--;
        return 1;
    }
    if (c == 't') {
        return scan_literal(s, "true", 4);
    }
    if (c == 'f') {
        return scan_literal(s, "false", 5);
    }
    if (c == 'n') {
        return scan_literal(s, "null", 4);
    }
    return scan_number(s, NULL); /* even unread, a number orjson refuses is refused */
}

/* Builds one value whole, as orjson would. */
static int scan_build(Scan *s, PyObject **out) {
    *out = NULL;
    scan_ws(s);
    if (s->p >= s->end) {
        return 0;
    }
    const unsigned char c = *s->p;
    const unsigned char *a, *b;
    int escaped;
    if (c == '"') {
        s->p++;
        SCAN_TRY(scan_string_raw(s, &a, &b, &escaped));
        return scan_make_string(s, a, b, escaped, out);
    }
    if (c == '[') {
        return scan_list(s, NULL, out);
    }
    if (c == '{') {
        return scan_select(s, NULL, out);
    }
    if (c == 't' || c == 'f' || c == 'n') {
        PyObject *v = c == 't' ? Py_True : c == 'f' ? Py_False : Py_None;
        SCAN_TRY(scan_literal(s,
                              c == 't'   ? "true"
                              : c == 'f' ? "false"
                                         : "null",
                              c == 'f' ? 5 : 4));
        Py_INCREF(v);
        *out = v;
        return 1;
    }
    return scan_number(s, out);
}

static const ScanField *scan_field(const ScanSchema *schema, const unsigned char *a, Py_ssize_t n) {
    for (int i = 0; i < schema->n; i++) {
        const ScanField *f = &schema->fields[i];
        if (f->len == n && f->name[0] == (char)a[0] && memcmp(f->name, a, (size_t)n) == 0) {
            return f;
        }
    }
    return NULL;
}

/* A field's value under its kind. */
static int scan_value_as(Scan *s, const ScanField *f, PyObject **out) {
    *out = NULL;
    scan_ws(s);
    if (s->p >= s->end) {
        return 0;
    }
    if (f->kind == SCAN_OBJECT && *s->p == '{') {
        return scan_select(s, f->sub, out);
    }
    if (f->kind != SCAN_LIST || *s->p != '[') {
        return scan_build(s, out);
    }
    return scan_list(s, f->sub, out);
}

/* An object at s->p: every member built (schema NULL), or only the schema's fields. */
static int scan_select(Scan *s, const ScanSchema *schema, PyObject **out) {
    *out = NULL;
    if (++s->depth > SCAN_MAX_DEPTH) {
        return 0;
    }
    s->p++; /* '{' */
    PyObject *dict = PyDict_New();
    if (dict == NULL) {
        return -1;
    }
    int rc = 1;
    if (!scan_take(s, '}')) {
        do {
            const unsigned char *a, *b;
            int escaped;
            PyObject *key = NULL, *value = NULL;
            if (!scan_take(s, '"')) {
                rc = 0;
                break;
            }
            if ((rc = scan_string_raw(s, &a, &b, &escaped)) <= 0) {
                break;
            }
            if (!scan_take(s, ':')) {
                rc = 0;
                break;
            }
            if (schema == NULL) {
                if ((rc = scan_make_string(s, a, b, escaped, &key)) > 0) {
                    rc = scan_build(s, &value);
                }
            } else if (escaped) {
                rc = 0; /* "\u0069d" is "id": rare enough to leave to orjson */
            } else {
                const ScanField *f = scan_field(schema, a, b - a);
                if (f == NULL) {
                    rc = scan_skip(s);
                    continue;
                }
                key = *f->key;
                Py_INCREF(key);
                rc = scan_value_as(s, f, &value);
            }
            if (rc > 0 && PyDict_SetItem(dict, key, value) < 0) { /* the last duplicate wins */
                rc = -1;
            }
            Py_XDECREF(key);
            Py_XDECREF(value);
        } while (rc > 0 && scan_take(s, ','));
        if (rc > 0 && !scan_take(s, '}')) {
            rc = 0;
        }
    }
    if (rc <= 0) {
        Py_DECREF(dict);
        return rc;
    }
    s->depth--;
    *out = dict;
    return 1;
}

static int scan_request(const char *json, Py_ssize_t n, PyObject **out) {
    *out = NULL;
    if (!scan_plain['a']) {
        scan_init_tables();
    }
    Scan s = {(const unsigned char *)json, (const unsigned char *)json + n, 0, NULL, 0};
    scan_ws(&s);
    int rc = 0;
    if (s.p < s.end && *s.p == '{') {
        rc = scan_select(&s, &SCAN_ROOT, out);
        if (rc > 0) {
            scan_ws(&s);
            if (s.p != s.end) {
                Py_CLEAR(*out);
                rc = 0; /* trailing bytes: not JSON */
            }
        }
    }
    PyMem_Free(s.buf);
    return rc;
}

PyDoc_STRVAR(select_request_doc,
             "select_request(data) -> dict | None\n\n"
             "The fields of a JSON bid request that the score path reads, built as orjson\n"
             "would build them, or None when the bytes are left to orjson (see\n"
             "request_scan.h: invalid JSON, surrogate escapes, very long integers, ...).");

static PyObject *select_request(PyObject *Py_UNUSED(module), PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *req;
    const int rc = scan_request(view.buf, view.len, &req);
    PyBuffer_Release(&view);
    if (rc < 0) {
        return NULL;
    }
    if (rc == 0) {
        Py_RETURN_NONE;
    }
    return req;
}

#endif
