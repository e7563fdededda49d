/*
 * One bid request (a dict parsed from JSON) to its feature values, in one call:
 *
 *   RequestEncoder(numeric_names, key_names, code_plan, cross_plan, bidder_cols,
 *                  cache_limit, table)
 *   encoder.encode(req, now) -> (values, columns)
 *       what FeaturePipeline._encode_python returns (model_server/features.py): the numeric
 *       features then the vocabulary codes, and the bidder-table columns to gather.
 *   encoder.rows(req, now, bidders, out)
 *       encode, then out[i, :r] = values, out[i, r + j] = table[bidders[i], columns[j]].
 *
 * The extraction mirrors features._extract line by line, including Python's exact-type checks
 * (`type(x) is int` excludes bool), truthiness, the order in which conversions may raise, and
 * float floor division. Plans are (key index, lookup dict, base, n_values, hash_buckets); the
 * lookup dicts are the pipeline's own, so values outside the vocabulary get the code
 * features._fill_unseen gives them (CRC-32 bucket or the "other" code) and are remembered in
 * the same dicts under the same bound. Every object read from the request is held until the
 * call ends, so no lookup can free what a later step still uses. Included once, by forest.c,
 * after request_path.h (get_float_buffer, index_at).
 */
#ifndef RTBSERVE_REQUEST_ENCODE_H
#define RTBSERVE_REQUEST_ENCODE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "request_path.h"

/* ---- layout shared with model_server/features.py (checked when an encoder is built) ------ */

enum {
    F_N_IMP,
    F_HAS_BANNER,
    F_HAS_VIDEO,
    F_HAS_NATIVE,
    F_HAS_AUDIO,
    F_BANNER_W,
    F_BANNER_H,
    F_N_SIZES,
    F_VIDEO_MAXDURATION,
    F_VIDEO_PLCMT,
    F_VIDEO_PLACEMENT,
    F_FLOOR_MAX,
    F_FLOOR_MIN,
    F_INVENTORY,
    F_DEVICETYPE,
    F_CONNECTIONTYPE,
    F_JS,
    F_HAS_USER_ID,
    F_HAS_IFA,
    F_DNT,
    F_LMT,
    F_HOUR,
    F_DOW,
    F_SECURE,
    F_INSTL,
    F_HAS_PMP,
    F_N_DEALS,
    F_PRIVATE_AUCTION,
    F_GDPR,
    F_COPPA,
    F_US_PRIVACY,
    RE_N_NUMERIC
};
static const char *const re_numeric_names[RE_N_NUMERIC] = {
    "n_imp",
    "has_banner",
    "has_video",
    "has_native",
    "has_audio",
    "banner_w",
    "banner_h",
    "n_sizes",
    "video_maxduration",
    "video_plcmt",
    "video_placement",
    "floor_max",
    "floor_min",
    "inventory",
    "devicetype",
    "connectiontype",
    "js",
    "has_user_id",
    "has_ifa",
    "dnt",
    "lmt",
    "hour",
    "dow",
    "secure",
    "instl",
    "has_pmp",
    "n_deals",
    "private_auction",
    "gdpr",
    "coppa",
    "us_privacy",
};

enum {
    K_SIZE,
    K_CUR,
    K_PUBLISHER,
    K_DOMAIN,
    K_BUNDLE,
    K_PROPERTY,
    K_CAT_TIER1,
    K_CAT,
    K_OS,
    K_MAKE,
    K_COUNTRY,
    K_REGION,
    K_MEDIA,
    K_DEVICETYPE,
    K_CONNECTIONTYPE,
    K_HOUR,
    K_FLOOR_BAND,
    RE_N_KEYS
};
static const char *const re_key_names[RE_N_KEYS] = {
    "size",
    "cur",
    "publisher",
    "domain",
    "bundle",
    "property",
    "cat_tier1",
    "cat",
    "os",
    "make",
    "country",
    "region",
    "media",
    "devicetype_key",
    "connectiontype_key",
    "hour_key",
    "floor_band",
};

#define RE_MAX_HEAD   8  /* leading bidder-table columns (index, overall rate, ...) */
#define RE_SMALL_INTS 64 /* "0".."63", features._INT_STR */

/* Interned strings: request field names, method names, and constant values. */
// clang-format off
#define RE_NAMES(X)                                                                            \
    X(imp) X(banner) X(format) X(w) X(h) X(video) X(maxduration) X(rqddurs) X(plcmt)           \
    X(placement) X(native) X(audio) X(bidfloor) X(bidfloorcur) X(secure) X(instl) X(pmp)       \
    X(deals) X(private_auction) X(site) X(app) X(dooh) X(domain) X(page) X(bundle)             \
    X(publisher) X(id) X(cat) X(content) X(device) X(devicetype) X(connectiontype) X(os)       \
    X(sua) X(platform) X(brand) X(make) X(user) X(geo) X(country) X(region) X(buyeruid) X(ifa) \
    X(regs) X(gdpr) X(us_privacy) X(ext) X(js) X(dnt) X(lmt) X(coppa) X(upper) X(lower)        \
    X(USD) X(IAB)
// clang-format on

static struct {
#define RE_DECLARE(n) PyObject *n;
    RE_NAMES(RE_DECLARE)
#undef RE_DECLARE
    PyObject *small_ints[RE_SMALL_INTS];
    PyObject *one;
} re_str;

static uint32_t re_crc_table[256];

static int re_init_constants(void) {
#define RE_INTERN(n)                                                                               \
    if ((re_str.n = PyUnicode_InternFromString(#n)) == NULL) {                                     \
        return -1;                                                                                 \
    }
    RE_NAMES(RE_INTERN)
#undef RE_INTERN
    for (int i = 0; i < RE_SMALL_INTS; i++) {
        char text[4];
        snprintf(text, sizeof text, "%d", i);
        if ((re_str.small_ints[i] = PyUnicode_InternFromString(text)) == NULL) {
            return -1;
        }
    }
    if ((re_str.one = PyLong_FromLong(1)) == NULL) {
        return -1;
    }
    for (uint32_t n = 0; n < 256; n++) { /* zlib's CRC-32 (reflected 0xEDB88320) */
        uint32_t c = n;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        re_crc_table[n] = c;
    }
    return 0;
}

/* ---- holding what the request hands out --------------------------------------------------- */

#define RE_KEEP_INLINE 128

typedef struct {
    PyObject **refs;
    Py_ssize_t n, cap;
    PyObject *inline_refs[RE_KEEP_INLINE];
} Keep;

static void keep_init(Keep *k) {
    k->refs = k->inline_refs;
    k->n = 0;
    k->cap = RE_KEEP_INLINE;
}

static void keep_release(Keep *k) {
    for (Py_ssize_t i = 0; i < k->n; i++) {
        Py_DECREF(k->refs[i]);
    }
    if (k->refs != k->inline_refs) {
        PyMem_Free(k->refs);
    }
    k->n = 0;
}

static int keep(Keep *k, PyObject *o) {
    if (k->n == k->cap) {
        PyObject **grown = PyMem_Malloc(sizeof(PyObject *) * (size_t)(2 * k->cap));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(grown, k->refs, sizeof(PyObject *) * (size_t)k->n);
        if (k->refs != k->inline_refs) {
            PyMem_Free(k->refs);
        }
        k->refs = grown;
        k->cap *= 2;
    }
    Py_INCREF(o);
    k->refs[k->n++] = o;
    return 0;
}

/* d.get(key) for a dict or NULL (an absent object: every get misses). *out is NULL if missing. */
static int get(Keep *k, PyObject *d, PyObject *key, PyObject **out) {
    *out = NULL;
    if (d == NULL) {
        return 0;
    }
    PyObject *v = PyDict_GetItemWithError(d, key);
    if (v == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    *out = v;
    return keep(k, v);
}

#define GET(out, d, name)                                                                          \
    do {                                                                                           \
        if (get(kp, (d), re_str.name, &(out)) < 0) {                                               \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)
#define TRY(call)                                                                                  \
    do {                                                                                           \
        if ((call) < 0) {                                                                          \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* ---- Python's scalar semantics -------------------------------------------------------------- */

static int is_dict(PyObject *o) { return o != NULL && PyDict_CheckExact(o); }
static int is_list(PyObject *o) { return o != NULL && PyList_CheckExact(o); }
static int is_int(PyObject *o) { return o != NULL && PyLong_CheckExact(o); }
static int is_none(PyObject *o) { return o == NULL || o == Py_None; }
static int is_text(PyObject *o) { /* type(o) is str and o */
    return o != NULL && PyUnicode_CheckExact(o) && PyUnicode_GET_LENGTH(o) > 0;
}

/* features._num: float(x) for int, bool and float (int may overflow); NaN otherwise. */
static int num(PyObject *x, double *out) {
    if (x != NULL && (PyLong_CheckExact(x) || PyBool_Check(x))) {
        const double v = PyLong_AsDouble(x);
        if (v == -1.0 && PyErr_Occurred()) {
            return -1;
        }
        *out = v;
    } else if (x != NULL && PyFloat_CheckExact(x)) {
        *out = PyFloat_AS_DOUBLE(x);
    } else {
        *out = NAN;
    }
    return 0;
}

static int truth(PyObject *x, int *out) {
    *out = is_none(x) ? 0 : PyObject_IsTrue(x);
    return *out;
}

static int equals_one(PyObject *x, int *out) { /* x == 1, None for a missing x */
    *out = is_none(x) ? 0 : PyObject_RichCompareBool(x, re_str.one, Py_EQ);
    return *out;
}

/* int(v) must exist: the errors Python's int(float) raises. */
static int check_integral(double v) {
    if (isnan(v)) {
        PyErr_SetString(PyExc_ValueError, "cannot convert float NaN to integer");
        return -1;
    }
    if (isinf(v)) {
        PyErr_SetString(PyExc_OverflowError, "cannot convert float infinity to integer");
        return -1;
    }
    return 0;
}

#define RE_EXACT_LL 9.0e18 /* |v| below this: int(v) fits a long long */

/* The decimal text of v at p (no terminator; up to 20 chars); returns its length. */
static int put_decimal(char *p, long long v) {
    char digits[20];
    int n = 0, len = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0) {
        p[len++] = '-';
    }
    while (n > 0) {
        p[len++] = digits[--n];
    }
    return len;
}

/* str(int(v)), with features._INT_STR's strings for 0..63. */
static PyObject *int_text(double v) {
    if (check_integral(v) < 0) {
        return NULL;
    }
    if (v > -1.0 && v < (double)RE_SMALL_INTS) {
        PyObject *s = re_str.small_ints[(int)v];
        Py_INCREF(s);
        return s;
    }
    if (fabs(v) < RE_EXACT_LL) {
        char text[24];
        return PyUnicode_FromStringAndSize(text, put_decimal(text, (long long)v));
    }
    PyObject *big = PyLong_FromDouble(v);
    if (big == NULL) {
        return NULL;
    }
    PyObject *s = PyObject_Str(big);
    Py_DECREF(big);
    return s;
}

/* x > d for an exact int x, compared exactly as Python compares int with float. */
static int int_greater(PyObject *x, double d) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(x, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (!overflow && v <= (1LL << 53) && v >= -(1LL << 53)) {
        return (double)v > d;
    }
    PyObject *f = PyFloat_FromDouble(d);
    if (f == NULL) {
        return -1;
    }
    const int r = PyObject_RichCompareBool(x, f, Py_GT);
    Py_DECREF(f);
    return r;
}

/* CPython's float // and % (Objects/floatobject.c), so hour and dow match `now // 3600.0`. */
static double py_floordiv(double vx, double wx) {
    double mod = fmod(vx, wx);
    double div = (vx - mod) / wx;
    if (mod != 0.0) {
        if ((wx < 0) != (mod < 0)) {
            div -= 1.0;
        }
    }
    if (div != 0.0) {
        double floordiv = floor(div);
        if (div - floordiv > 0.5) {
            floordiv += 1.0;
        }
        return floordiv;
    }
    return copysign(0.0, vx / wx);
}

static double py_mod(double vx, double wx) {
    double mod = fmod(vx, wx);
    if (mod != 0.0) {
        if ((wx < 0) != (mod < 0)) {
            mod += wx;
        }
    } else {
        mod = copysign(0.0, wx);
    }
    return mod;
}

/* ---- strings ----------------------------------------------------------------------------------
 */

static int span_is_ascii(PyObject *s, Py_ssize_t lo, Py_ssize_t hi) {
    if (PyUnicode_IS_ASCII(s)) {
        return 1;
    }
    const int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    for (Py_ssize_t i = lo; i < hi; i++) {
        if (PyUnicode_READ(kind, data, i) > 127) {
            return 0;
        }
    }
    return 1;
}

/* s[lo:hi] in one ASCII case (upper or lower), into a new string; the span must be ASCII. */
static PyObject *ascii_case_span(PyObject *s, Py_ssize_t lo, Py_ssize_t hi, int upper) {
    PyObject *r = PyUnicode_New(hi - lo, 127);
    if (r == NULL) {
        return NULL;
    }
    const int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_UCS1 *dst = PyUnicode_1BYTE_DATA(r);
    for (Py_ssize_t i = lo; i < hi; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (upper && c >= 'a' && c <= 'z') {
            c -= 'a' - 'A';
        } else if (!upper && c >= 'A' && c <= 'Z') {
            c += 'a' - 'A';
        }
        dst[i - lo] = (Py_UCS1)c;
    }
    return r;
}

/* s.upper() / s.lower(): in C for ASCII, Python's Unicode-aware methods otherwise. */
static PyObject *change_case(PyObject *s, int upper) {
    const Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    if (PyUnicode_IS_ASCII(s)) {
        return ascii_case_span(s, 0, n, upper);
    }
    return PyObject_CallMethodNoArgs(s, upper ? re_str.upper : re_str.lower);
}

/* Narrows [lo, hi) of s as str.strip() would (Unicode whitespace). */
static void strip_span(PyObject *s, Py_ssize_t *lo, Py_ssize_t *hi) {
    const int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    while (*lo < *hi && Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, *lo))) {
        (*lo)++;
    }
    while (*hi > *lo && Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, *hi - 1))) {
        (*hi)--;
    }
}

static int starts_with_www(PyObject *s) {
    if (PyUnicode_GET_LENGTH(s) < 4) {
        return 0;
    }
    const int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    return PyUnicode_READ(kind, data, 0) == 'w' && PyUnicode_READ(kind, data, 1) == 'w' &&
           PyUnicode_READ(kind, data, 2) == 'w' && PyUnicode_READ(kind, data, 3) == '.';
}

/* features._norm_domain of the non-empty text s[lo:hi]: *out is NULL for None, and may be ""
 * (for "www."), exactly as the Python returns. */
static int norm_domain_span(PyObject *s, Py_ssize_t lo, Py_ssize_t hi, PyObject **out) {
    *out = NULL;
    strip_span(s, &lo, &hi);
    PyObject *low;
    if (span_is_ascii(s, lo, hi)) {
        low = ascii_case_span(s, lo, hi, 0);
    } else {
        PyObject *sub = PyUnicode_Substring(s, lo, hi);
        if (sub == NULL) {
            return -1;
        }
        low = PyObject_CallMethodNoArgs(sub, re_str.lower);
        Py_DECREF(sub);
    }
    if (low == NULL) {
        return -1;
    }
    const Py_ssize_t n = PyUnicode_GET_LENGTH(low);
    if (starts_with_www(low)) {
        *out = PyUnicode_Substring(low, 4, n);
        Py_DECREF(low);
        return *out == NULL ? -1 : 0;
    }
    if (n == 0) {
        Py_DECREF(low);
        return 0;
    }
    *out = low;
    return 0;
}

static int norm_domain(PyObject *d, PyObject **out) {
    *out = NULL;
    if (!is_text(d)) {
        return 0;
    }
    return norm_domain_span(d, 0, PyUnicode_GET_LENGTH(d), out);
}

static Py_ssize_t find_char(PyObject *s, Py_ssize_t lo, Py_ssize_t hi, Py_UCS4 c) {
    const int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    for (Py_ssize_t i = lo; i < hi; i++) {
        if (PyUnicode_READ(kind, data, i) == c) {
            return i;
        }
    }
    return -1;
}

/* _norm_domain(_host(url)): the host is what follows the first "://" (if any) of the stripped
 * URL, up to the first "/", "?" or ":". */
static int host_domain(PyObject *url, PyObject **out) {
    *out = NULL;
    if (url == NULL || !PyUnicode_CheckExact(url)) {
        return 0;
    }
    Py_ssize_t lo = 0, hi = PyUnicode_GET_LENGTH(url);
    strip_span(url, &lo, &hi);
    const int kind = PyUnicode_KIND(url);
    const void *data = PyUnicode_DATA(url);
    for (Py_ssize_t i = lo; i + 2 < hi; i++) {
        if (PyUnicode_READ(kind, data, i) == ':' && PyUnicode_READ(kind, data, i + 1) == '/' &&
            PyUnicode_READ(kind, data, i + 2) == '/') {
            lo = i + 3;
            break;
        }
    }
    const Py_UCS4 stops[3] = {'/', '?', ':'};
    for (int k = 0; k < 3; k++) {
        const Py_ssize_t at = find_char(url, lo, hi, stops[k]);
        if (at >= 0) {
            hi = at;
        }
    }
    return hi > lo ? norm_domain_span(url, lo, hi, out) : 0;
}

/* features._first_str: xs[0] of a non-empty list when it is non-empty text or an int. */
static int first_text(Keep *kp, PyObject *xs, PyObject **out) {
    *out = NULL;
    if (!is_list(xs) || PyList_GET_SIZE(xs) == 0) {
        return 0;
    }
    PyObject *x = PyList_GET_ITEM(xs, 0);
    if (is_text(x)) {
        Py_INCREF(x);
        *out = x;
    } else if (is_int(x)) {
        if (keep(kp, x) < 0 || (*out = PyObject_Str(x)) == NULL) {
            return -1;
        }
    }
    return 0;
}

static int has_char_outside_zero_dash(PyObject *s) { /* bool(s.strip("0-")) */
    const int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    const Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        const Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c != '0' && c != '-') {
            return 1;
        }
    }
    return 0;
}

static uint32_t crc32_bytes(const unsigned char *p, Py_ssize_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < n; i++) {
        c = re_crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    }
    return c ^ 0xFFFFFFFFu;
}

/* features.stable_bucket: zlib.crc32 of the UTF-8 ("surrogatepass") bytes, mod buckets. */
static int stable_bucket(PyObject *s, Py_ssize_t buckets, Py_ssize_t *out) {
    if (PyUnicode_IS_ASCII(s)) {
        *out = (Py_ssize_t)(crc32_bytes(PyUnicode_1BYTE_DATA(s), PyUnicode_GET_LENGTH(s)) %
                            (uint32_t)buckets);
        return 0;
    }
    PyObject *b = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    if (b == NULL) {
        return -1;
    }
    *out =
        (Py_ssize_t)(crc32_bytes((const unsigned char *)PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b)) %
                     (uint32_t)buckets);
    Py_DECREF(b);
    return 0;
}

/* ---- extraction (features._extract) ---------------------------------------------------------- */

typedef struct { /* what the impressions add up to */
    double banner, video, native, audio, bw, bh, vdur, vplcmt, vplacement;
    double fmax, fmin, secure, instl, has_pmp, private_auction;
    Py_ssize_t n_sizes, n_deals;
    PyObject *size, *cur; /* owned; NULL while still None */
} Imps;

static PyObject *size_text(double bw, double bh) { /* f"{int(bw)}x{int(bh)}" */
    if (check_integral(bw) < 0 || check_integral(bh) < 0) {
        return NULL;
    }
    if (fabs(bw) < RE_EXACT_LL && fabs(bh) < RE_EXACT_LL) {
        char text[48];
        int n = put_decimal(text, (long long)bw);
        text[n++] = 'x';
        n += put_decimal(text + n, (long long)bh);
        return PyUnicode_FromStringAndSize(text, n);
    }
    PyObject *w = int_text(bw), *h = w ? int_text(bh) : NULL;
    PyObject *r = h ? PyUnicode_FromFormat("%Ux%U", w, h) : NULL;
    Py_XDECREF(w);
    Py_XDECREF(h);
    return r;
}

static int banner_of(Keep *kp, PyObject *b, Imps *a) {
    PyObject *fmt, *w, *h;
    a->banner = 1.0;
    GET(fmt, b, format);
    GET(w, b, w);
    GET(h, b, h);
    if (is_list(fmt)) {
        a->n_sizes += PyList_GET_SIZE(fmt);
        if ((is_none(w) || is_none(h)) && PyList_GET_SIZE(fmt) > 0 &&
            is_dict(PyList_GET_ITEM(fmt, 0))) {
            PyObject *first = PyList_GET_ITEM(fmt, 0);
            TRY(keep(kp, first));
            GET(w, first, w);
            GET(h, first, h);
        }
    } else if (!is_none(w)) {
        a->n_sizes += 1;
    }
    if (a->size == NULL && w != NULL && (PyLong_CheckExact(w) || PyFloat_CheckExact(w))) {
        TRY(num(w, &a->bw));
        TRY(num(h, &a->bh));
        if (!isnan(a->bh) && (a->size = size_text(a->bw, a->bh)) == NULL) {
            goto fail;
        }
    }
    return 0;
fail:
    return -1;
}

/* max(x for x in rq if type(x) is int), or NULL when there is none. */
static int max_int(Keep *kp, PyObject *rq, PyObject **out) {
    *out = NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rq); i++) {
        PyObject *x = PyList_GET_ITEM(rq, i);
        if (!is_int(x)) {
            continue;
        }
        TRY(keep(kp, x));
        int greater = 1;
        if (*out != NULL && (greater = PyObject_RichCompareBool(x, *out, Py_GT)) < 0) {
            goto fail;
        }
        if (greater) {
            *out = x;
        }
    }
    return 0;
fail:
    return -1;
}

static int video_of(Keep *kp, PyObject *v, Imps *a) {
    PyObject *d, *rq, *p;
    double dv;
    a->video = 1.0;
    GET(d, v, maxduration);
    if (is_none(d)) {
        GET(rq, v, rqddurs); /* 2.6: exact durations instead of a range */
        if (is_list(rq) && PyList_GET_SIZE(rq) > 0) {
            TRY(max_int(kp, rq, &d));
        }
    }
    TRY(num(d, &dv));
    if (!isnan(dv) && !(a->vdur >= dv)) {
        a->vdur = dv;
    }
    if (isnan(a->vplcmt)) {
        GET(p, v, plcmt);
        TRY(num(p, &a->vplcmt));
    }
    if (isnan(a->vplacement)) {
        GET(p, v, placement);
        TRY(num(p, &a->vplacement));
    }
    return 0;
fail:
    return -1;
}

static int floor_of(Keep *kp, PyObject *imp, Imps *a) {
    PyObject *bf, *c, *s;
    GET(bf, imp, bidfloor); /* OpenRTB's default bidfloor is 0 */
    double f = 0.0;
    if (is_int(bf)) {
        f = PyLong_AsDouble(bf);
        if (f == -1.0 && PyErr_Occurred()) {
            goto fail;
        }
    } else if (bf != NULL && PyFloat_CheckExact(bf)) {
        f = PyFloat_AS_DOUBLE(bf);
    }
    if (f > a->fmax) { /* max(fmax, f) and min(fmin, f): the first wins ties and NaN */
        a->fmax = f;
    }
    if (f < a->fmin) {
        a->fmin = f;
    }
    if (a->cur == NULL) {
        GET(c, imp, bidfloorcur);
        if (is_text(c)) {
            if ((a->cur = change_case(c, 1)) == NULL) {
                goto fail;
            }
        } else {
            Py_INCREF(re_str.USD);
            a->cur = re_str.USD;
        }
    }
    GET(s, imp, secure);
    if (is_int(s)) {
        int greater = isnan(a->secure) ? 1 : int_greater(s, a->secure);
        TRY(greater);
        if (greater) {
            const double v = PyLong_AsDouble(s);
            if (v == -1.0 && PyErr_Occurred()) {
                goto fail;
            }
            a->secure = v;
        }
    }
    return 0;
fail:
    return -1;
}

static int deals_of(Keep *kp, PyObject *imp, Imps *a) {
    PyObject *x, *pmp, *deals;
    int yes;
    GET(x, imp, instl);
    TRY(equals_one(x, &yes));
    if (yes) {
        a->instl = 1.0;
    }
    GET(pmp, imp, pmp);
    if (is_dict(pmp)) {
        GET(deals, pmp, deals);
        if (is_list(deals) && PyList_GET_SIZE(deals) > 0) {
            a->has_pmp = 1.0;
            a->n_deals += PyList_GET_SIZE(deals);
        }
        GET(x, pmp, private_auction);
        TRY(equals_one(x, &yes));
        if (yes) {
            a->private_auction = 1.0;
        }
    }
    return 0;
fail:
    return -1;
}

static int imp_of(Keep *kp, PyObject *imp, Imps *a) {
    PyObject *x;
    GET(x, imp, banner);
    if (is_dict(x)) {
        TRY(banner_of(kp, x, a));
    }
    GET(x, imp, video);
    if (is_dict(x)) {
        TRY(video_of(kp, x, a));
    }
    GET(x, imp, native);
    if (is_dict(x)) {
        a->native = 1.0;
    }
    GET(x, imp, audio);
    if (is_dict(x)) {
        a->audio = 1.0;
    }
    TRY(floor_of(kp, imp, a));
    TRY(deals_of(kp, imp, a));
    return 0;
fail:
    return -1;
}

/* The inventory object (site, app or dooh) and its domain, bundle, property, publisher, cat. */
static int inventory_of(Keep *kp, PyObject *req, double *x, PyObject **keys) {
    PyObject *site, *app, *dooh, *inv = NULL, *d, *pub, *pid, *content, *xs;
    GET(site, req, site);
    GET(app, req, app);
    if (is_dict(site)) {
        x[F_INVENTORY] = 0.0;
        inv = site;
        GET(d, site, domain);
        TRY(norm_domain(d, &keys[K_DOMAIN]));
        if (keys[K_DOMAIN] == NULL || PyUnicode_GET_LENGTH(keys[K_DOMAIN]) == 0) {
            Py_CLEAR(keys[K_DOMAIN]);
            GET(d, site, page);
            TRY(host_domain(d, &keys[K_DOMAIN]));
        }
        keys[K_PROPERTY] = keys[K_DOMAIN];
    } else if (is_dict(app)) {
        x[F_INVENTORY] = 1.0;
        inv = app;
        GET(d, app, bundle);
        keys[K_BUNDLE] = is_text(d) ? d : NULL;
        Py_XINCREF(keys[K_BUNDLE]);
        GET(d, app, domain);
        TRY(norm_domain(d, &keys[K_DOMAIN]));
        keys[K_PROPERTY] = keys[K_BUNDLE] ? keys[K_BUNDLE] : keys[K_DOMAIN];
    } else {
        GET(dooh, req, dooh); /* 2.6 digital out-of-home */
        if (is_dict(dooh)) {
            x[F_INVENTORY] = 2.0;
            inv = dooh;
            GET(d, dooh, domain);
            TRY(norm_domain(d, &keys[K_DOMAIN]));
            keys[K_PROPERTY] = keys[K_DOMAIN];
        } else {
            x[F_INVENTORY] = NAN;
        }
    }
    Py_XINCREF(keys[K_PROPERTY]);
    GET(pub, inv, publisher);
    if (!is_dict(pub)) {
        pub = NULL;
    }
    GET(pid, pub, id);
    if (is_text(pid)) {
        Py_INCREF(pid);
        keys[K_PUBLISHER] = pid;
    } else if (is_int(pid) && (keys[K_PUBLISHER] = PyObject_Str(pid)) == NULL) {
        goto fail;
    }
    GET(xs, inv, cat);
    TRY(first_text(kp, xs, &keys[K_CAT]));
    if (keys[K_CAT] == NULL) {
        GET(content, inv, content);
        if (is_dict(content)) {
            GET(xs, content, cat);
            TRY(first_text(kp, xs, &keys[K_CAT]));
        }
    }
    if (keys[K_CAT] == NULL) {
        GET(xs, pub, cat);
        TRY(first_text(kp, xs, &keys[K_CAT]));
    }
    PyObject *cat = keys[K_CAT];
    if (cat != NULL && PyUnicode_GET_LENGTH(cat) >= 3 && PyUnicode_READ_CHAR(cat, 0) == 'I' &&
        PyUnicode_READ_CHAR(cat, 1) == 'A' && PyUnicode_READ_CHAR(cat, 2) == 'B') {
        const Py_ssize_t dash = find_char(cat, 0, PyUnicode_GET_LENGTH(cat), '-');
        if (dash >= 0) {
            if ((keys[K_CAT_TIER1] = PyUnicode_Substring(cat, 0, dash)) == NULL) {
                goto fail;
            }
        }
    }
    if (keys[K_CAT_TIER1] == NULL) {
        Py_XINCREF(cat);
        keys[K_CAT_TIER1] = cat;
    }
    return 0;
fail:
    return -1;
}

/* Lower- or upper-cased non-empty text, or NULL (None). */
static int cased_text(PyObject *s, int upper, PyObject **out) {
    *out = NULL;
    if (!is_text(s)) {
        return 0;
    }
    *out = change_case(s, upper);
    return *out == NULL ? -1 : 0;
}

static int device_of(Keep *kp, PyObject *device, PyObject *user, double *x, PyObject **keys) {
    PyObject *o, *sua, *platform = NULL, *brand = NULL, *geo, *rg;
    GET(o, device, devicetype);
    TRY(num(o, &x[F_DEVICETYPE]));
    GET(o, device, connectiontype);
    TRY(num(o, &x[F_CONNECTIONTYPE]));
    GET(o, device, os);
    if (is_text(o)) {
        TRY(cased_text(o, 0, &keys[K_OS]));
    } else { /* 2.6 structured user agent */
        GET(sua, device, sua);
        if (is_dict(sua)) {
            GET(platform, sua, platform);
        }
        if (is_dict(platform)) {
            GET(brand, platform, brand);
        }
        TRY(cased_text(brand, 0, &keys[K_OS]));
    }
    GET(o, device, make);
    TRY(cased_text(o, 0, &keys[K_MAKE]));
    GET(geo, device, geo);
    if (!is_dict(geo)) {
        GET(geo, user, geo);
        if (!is_dict(geo)) {
            geo = NULL;
        }
    }
    GET(o, geo, country);
    TRY(cased_text(o, 1, &keys[K_COUNTRY]));
    GET(rg, geo, region);
    if (keys[K_COUNTRY] != NULL && is_text(rg)) {
        PyObject *r;
        TRY(cased_text(rg, 1, &r));
        keys[K_REGION] = PyUnicode_FromFormat("%U-%U", keys[K_COUNTRY], r);
        Py_DECREF(r);
        if (keys[K_REGION] == NULL) {
            goto fail;
        }
    }
    return 0;
fail:
    return -1;
}

static int extract(Keep *kp, PyObject *req, double now, double *x, PyObject **keys) {
    PyObject *imps, *device, *user, *o, *uid, *regs, *gdpr, *usp, *ext;
    Imps a = {.bw = NAN,
              .bh = NAN,
              .vdur = NAN,
              .vplcmt = NAN,
              .vplacement = NAN,
              .fmax = -INFINITY,
              .fmin = INFINITY,
              .secure = NAN};
    int flag;
    GET(imps, req, imp);
    if (!is_list(imps)) {
        imps = NULL;
    }
    for (Py_ssize_t i = 0; imps != NULL && i < PyList_GET_SIZE(imps); i++) {
        PyObject *imp = PyList_GET_ITEM(imps, i);
        if (is_dict(imp)) {
            TRY(keep(kp, imp));
            TRY(imp_of(kp, imp, &a));
        }
    }
    keys[K_SIZE] = a.size;
    keys[K_CUR] = a.cur;
    a.size = a.cur = NULL;
    if (a.fmax == -INFINITY) {
        a.fmax = a.fmin = NAN;
    }
    TRY(inventory_of(kp, req, x, keys));

    GET(device, req, device);
    if (!is_dict(device)) {
        device = NULL;
    }
    GET(user, req, user);
    if (!is_dict(user)) {
        user = NULL;
    }
    TRY(device_of(kp, device, user, x, keys));
    GET(uid, user, id);
    TRY(truth(uid, &flag));
    if (!flag) {
        GET(uid, user, buyeruid);
    }
    GET(o, device, ifa);
    x[F_HAS_IFA] = is_text(o) && has_char_outside_zero_dash(o) ? 1.0 : 0.0;
    GET(regs, req, regs);
    if (!is_dict(regs)) {
        regs = NULL;
    }
    GET(gdpr, regs, gdpr);
    GET(usp, regs, us_privacy);
    GET(ext, regs, ext); /* OpenRTB 2.5 kept these in regs.ext */
    if (is_dict(ext)) {
        if (is_none(gdpr)) {
            GET(gdpr, ext, gdpr);
        }
        TRY(truth(usp, &flag));
        if (!flag) {
            GET(usp, ext, us_privacy);
        }
    }
    const double hour = py_mod(py_floordiv(now, 3600.0), 24.0);
    const double dow = py_mod(py_floordiv(now, 86400.0) + 3.0, 7.0); /* Monday = 0 */
    TRY(check_integral(hour));
    TRY(check_integral(dow));

    x[F_N_IMP] = imps != NULL ? (double)PyList_GET_SIZE(imps) : 0.0;
    x[F_HAS_BANNER] = a.banner;
    x[F_HAS_VIDEO] = a.video;
    x[F_HAS_NATIVE] = a.native;
    x[F_HAS_AUDIO] = a.audio;
    x[F_BANNER_W] = a.bw;
    x[F_BANNER_H] = a.bh;
    x[F_N_SIZES] = (double)a.n_sizes;
    x[F_VIDEO_MAXDURATION] = a.vdur;
    x[F_VIDEO_PLCMT] = a.vplcmt;
    x[F_VIDEO_PLACEMENT] = a.vplacement;
    x[F_FLOOR_MAX] = a.fmax;
    x[F_FLOOR_MIN] = a.fmin;
    GET(o, device, js);
    TRY(num(o, &x[F_JS]));
    TRY(truth(uid, &flag));
    x[F_HAS_USER_ID] = flag;
    GET(o, device, dnt);
    TRY(num(o, &x[F_DNT]));
    GET(o, device, lmt);
    TRY(num(o, &x[F_LMT]));
    x[F_HOUR] = trunc(hour);
    x[F_DOW] = trunc(dow);
    x[F_SECURE] = a.secure;
    x[F_INSTL] = a.instl;
    x[F_HAS_PMP] = a.has_pmp;
    x[F_N_DEALS] = (double)a.n_deals;
    x[F_PRIVATE_AUCTION] = a.private_auction;
    TRY(num(gdpr, &x[F_GDPR]));
    GET(o, regs, coppa);
    TRY(num(o, &x[F_COPPA]));
    TRY(truth(usp, &flag));
    x[F_US_PRIVACY] = flag;

    PyObject *media = a.video != 0.0    ? re_str.video
                      : a.banner != 0.0 ? re_str.banner
                      : a.native != 0.0 ? re_str.native
                      : a.audio != 0.0  ? re_str.audio
                                        : NULL;
    Py_XINCREF(media);
    keys[K_MEDIA] = media;
    if (!isnan(x[F_DEVICETYPE]) && (keys[K_DEVICETYPE] = int_text(x[F_DEVICETYPE])) == NULL) {
        goto fail;
    }
    if (!isnan(x[F_CONNECTIONTYPE]) &&
        (keys[K_CONNECTIONTYPE] = int_text(x[F_CONNECTIONTYPE])) == NULL) {
        goto fail;
    }
    if ((keys[K_HOUR] = int_text(hour)) == NULL) {
        goto fail;
    }
    if (!isnan(a.fmax)) { /* features._floor_band: roughly 1.4x steps from $0.01 */
        double band = 0.0;
        if (a.fmax > 1e4) { /* features.FLOOR_BAND_TOP: the top band, and no infinite log */
            band = 30.0;
        } else if (a.fmax > 0.0) {
            const double y = 2.0 * log2(a.fmax * 100.0);
            TRY(check_integral(y));
            band = fmax(0.0, fmin(30.0, trunc(y) + 1.0));
        }
        keys[K_FLOOR_BAND] = int_text(band);
    }
    return 0;
fail:
    Py_XDECREF(a.size);
    Py_XDECREF(a.cur);
    return -1;
}

/* ---- the encoder ------------------------------------------------------------------------------
 */

typedef struct {
    Py_ssize_t key; /* index into the extracted values (K_*) */
    PyObject *map;  /* value (None: missing) -> code; the pipeline's dict */
    Py_ssize_t base, n_values, buckets;
} KeyPlan;

typedef struct {
    PyObject_HEAD KeyPlan code[RE_N_KEYS], cross[RE_N_KEYS];
    Py_ssize_t n_code, n_cross, head, cache_limit;
    Py_buffer table;
    int have_table;
} EncoderObject;

/* The code of `value` (NULL: missing) under plan p: 1 with *hit (borrowed) from the dict, or 0
 * with *code computed as features._fill_unseen does (and remembered up to the bound). */
static int look_up(const EncoderObject *e, const KeyPlan *p, PyObject *value, PyObject **hit,
                   Py_ssize_t *code) {
    *hit = PyDict_GetItemWithError(p->map, value != NULL ? value : Py_None);
    if (*hit != NULL) {
        return 1;
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    if (value == NULL) {
        PyErr_SetString(PyExc_KeyError, "a lookup table has no entry for a missing value");
        return -1;
    }
    Py_ssize_t bucket = 0;
    if (p->buckets > 0 && stable_bucket(value, p->buckets, &bucket) < 0) {
        return -1;
    }
    *code = p->base + p->n_values + bucket;
    if (PyDict_GET_SIZE(p->map) < e->cache_limit + p->n_values) {
        PyObject *c = PyLong_FromSsize_t(*code);
        if (c == NULL) {
            return -1;
        }
        const int rc = PyDict_SetItem(p->map, value, c);
        Py_DECREF(c);
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

/* values: RE_N_NUMERIC + n_code doubles; cols: head + n_cross columns. */
static int encode_into(EncoderObject *e, PyObject *req, double now, double *values,
                       Py_ssize_t *cols) {
    PyObject *keys[RE_N_KEYS] = {0};
    Keep kp;
    int rc = -1;
    keep_init(&kp);
    if (extract(&kp, req, now, values, keys) < 0) {
        goto done;
    }
    for (Py_ssize_t j = 0; j < e->n_code; j++) {
        PyObject *hit;
        Py_ssize_t code;
        const int found = look_up(e, &e->code[j], keys[e->code[j].key], &hit, &code);
        if (found < 0) {
            goto done;
        }
        double v = (double)code;
        if (found && (v = PyFloat_AsDouble(hit)) == -1.0 && PyErr_Occurred()) {
            goto done;
        }
        values[RE_N_NUMERIC + j] = v;
    }
    for (Py_ssize_t j = 0; j < e->head; j++) {
        cols[j] = j;
    }
    for (Py_ssize_t j = 0; j < e->n_cross; j++) {
        PyObject *hit;
        Py_ssize_t code;
        const int found = look_up(e, &e->cross[j], keys[e->cross[j].key], &hit, &code);
        if (found < 0) {
            goto done;
        }
        if (found && (code = PyLong_AsSsize_t(hit)) == -1 && PyErr_Occurred()) {
            goto done;
        }
        cols[e->head + j] = code;
    }
    rc = 0;
done:
    for (int k = 0; k < RE_N_KEYS; k++) {
        Py_XDECREF(keys[k]);
    }
    keep_release(&kp);
    return rc;
}

static int check_request(PyObject *req) {
    if (!PyDict_CheckExact(req)) {
        PyErr_SetString(PyExc_TypeError, "the request must be a dict");
        return -1;
    }
    return 0;
}

static PyObject *encoder_encode(EncoderObject *e, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "encode(req, now) takes 2 arguments");
        return NULL;
    }
    double values[RE_N_NUMERIC + RE_N_KEYS];
    Py_ssize_t cols[RE_MAX_HEAD + RE_N_KEYS];
    const double now = PyFloat_AsDouble(args[1]);
    if ((now == -1.0 && PyErr_Occurred()) || check_request(args[0]) < 0 ||
        encode_into(e, args[0], now, values, cols) < 0) {
        return NULL;
    }
    const Py_ssize_t r = RE_N_NUMERIC + e->n_code, c = e->head + e->n_cross;
    PyObject *nums = PyList_New(r), *columns = PyList_New(c);
    if (nums == NULL || columns == NULL) {
        goto fail;
    }
    for (Py_ssize_t k = 0; k < r; k++) {
        PyObject *v = PyFloat_FromDouble(values[k]);
        if (v == NULL) {
            goto fail;
        }
        PyList_SET_ITEM(nums, k, v);
    }
    for (Py_ssize_t k = 0; k < c; k++) {
        PyObject *v = PyLong_FromSsize_t(cols[k]);
        if (v == NULL) {
            goto fail;
        }
        PyList_SET_ITEM(columns, k, v);
    }
    PyObject *pair = PyTuple_Pack(2, nums, columns);
    Py_DECREF(nums);
    Py_DECREF(columns);
    return pair;
fail:
    Py_XDECREF(nums);
    Py_XDECREF(columns);
    return NULL;
}

/* One request's rows for `n` bidders (table row indexes, already checked) into `dst`. */
static int encoder_fill_rows(EncoderObject *e, PyObject *req, double now, const Py_ssize_t *bidders,
                             Py_ssize_t n, float *dst) {
    double values[RE_N_NUMERIC + RE_N_KEYS];
    Py_ssize_t cols[RE_MAX_HEAD + RE_N_KEYS];
    const Py_ssize_t r = RE_N_NUMERIC + e->n_code, c = e->head + e->n_cross;
    if (encode_into(e, req, now, values, cols) < 0) {
        return -1;
    }
    const Py_ssize_t n_cols = e->table.shape[1];
    float row_start[RE_N_NUMERIC + RE_N_KEYS];
    for (Py_ssize_t k = 0; k < r; k++) {
        row_start[k] = (float)values[k]; /* numpy's float64 -> float32 rounding; NaN stays NaN */
    }
    for (Py_ssize_t j = 0; j < c; j++) {
        if (cols[j] < 0 || cols[j] >= n_cols) {
            PyErr_Format(PyExc_IndexError, "column %zd is out of range [0, %zd)", cols[j], n_cols);
            return -1;
        }
    }
    assemble_rows(row_start, r, cols, c, bidders, n, e->table.buf, n_cols, dst);
    return 0;
}

static PyObject *encoder_rows(EncoderObject *e, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "rows(req, now, bidders, out) takes 4 arguments");
        return NULL;
    }
    PyObject *bidders = NULL, *result = NULL;
    Py_buffer out = {0};
    int have_out = 0;
    Py_ssize_t *rows = NULL;
    const Py_ssize_t width = RE_N_NUMERIC + e->n_code + e->head + e->n_cross;
    const double now = PyFloat_AsDouble(args[1]);
    if ((now == -1.0 && PyErr_Occurred()) || check_request(args[0]) < 0) {
        return NULL;
    }
    bidders = PySequence_Fast(args[2], "bidders must be a sequence of ints");
    if (bidders == NULL || get_float_buffer(args[3], "out", 2, 4, 1, &out) != 0) {
        goto done;
    }
    have_out = 1;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(bidders);
    if (out.shape[0] != n || out.shape[1] != width) {
        PyErr_Format(PyExc_ValueError, "out must have shape (%zd, %zd), not (%zd, %zd)", n, width,
                     out.shape[0], out.shape[1]);
        goto done;
    }
    rows = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n > 0 ? n : 1));
    if (rows == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (table_rows_of(bidders, e->table.shape[0], rows) != 0 ||
        encoder_fill_rows(e, args[0], now, rows, n, out.buf) != 0) {
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(rows);
    if (have_out) {
        PyBuffer_Release(&out);
    }
    Py_XDECREF(bidders);
    return result;
}

/* ---- construction -----------------------------------------------------------------------------
 */

static int check_names(PyObject *given, const char *const *expected, Py_ssize_t n,
                       const char *what) {
    PyObject *seq = PySequence_Fast(given, "names must be a sequence of str");
    if (seq == NULL) {
        return -1;
    }
    int ok = PySequence_Fast_GET_SIZE(seq) == n;
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        PyObject *s = PySequence_Fast_GET_ITEM(seq, i);
        ok = PyUnicode_Check(s) && PyUnicode_CompareWithASCIIString(s, expected[i]) == 0;
    }
    Py_DECREF(seq);
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s do not match the native encoder's layout", what);
        return -1;
    }
    return 0;
}

static Py_ssize_t nonnegative(PyObject *o, const char *what) {
    const Py_ssize_t v = PyLong_AsSsize_t(o);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0", what);
        return -1;
    }
    return v;
}

/* A plan: a sequence of (key index, dict, base, n_values, hash_buckets). */
static int read_plan(PyObject *obj, KeyPlan *plan, Py_ssize_t *n) {
    PyObject *seq = PySequence_Fast(obj, "a plan must be a sequence of tuples");
    if (seq == NULL) {
        return -1;
    }
    *n = 0;
    if (PySequence_Fast_GET_SIZE(seq) > RE_N_KEYS) {
        PyErr_SetString(PyExc_ValueError, "a plan has more entries than there are keys");
        goto fail;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(seq, i);
        KeyPlan *p = &plan[i];
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 5 ||
            !PyDict_CheckExact(PyTuple_GET_ITEM(t, 1))) {
            PyErr_SetString(PyExc_TypeError,
                            "plan entries are (key, dict, base, n_values, hash_buckets)");
            goto fail;
        }
        if ((p->key = nonnegative(PyTuple_GET_ITEM(t, 0), "key")) < 0 ||
            (p->base = nonnegative(PyTuple_GET_ITEM(t, 2), "base")) < 0 ||
            (p->n_values = nonnegative(PyTuple_GET_ITEM(t, 3), "n_values")) < 0 ||
            (p->buckets = nonnegative(PyTuple_GET_ITEM(t, 4), "hash_buckets")) < 0) {
            goto fail;
        }
        if (p->key >= RE_N_KEYS || p->buckets > (Py_ssize_t)UINT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "plan key or hash_buckets out of range");
            goto fail;
        }
        p->map = PyTuple_GET_ITEM(t, 1);
        Py_INCREF(p->map);
        *n = i + 1;
    }
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    return -1;
}

static void encoder_clear(EncoderObject *e) {
    for (Py_ssize_t j = 0; j < e->n_code; j++) {
        Py_CLEAR(e->code[j].map);
    }
    for (Py_ssize_t j = 0; j < e->n_cross; j++) {
        Py_CLEAR(e->cross[j].map);
    }
    e->n_code = e->n_cross = 0;
    if (e->have_table) {
        PyBuffer_Release(&e->table);
        e->have_table = 0;
    }
}

static int encoder_init(EncoderObject *e, PyObject *args, PyObject *kwds) {
    PyObject *numeric_names, *key_names, *code_plan, *cross_plan, *table;
    Py_ssize_t head, cache_limit;
    static char *kwlist[] = {"numeric_names", "key_names",   "code_plan", "cross_plan",
                             "bidder_cols",   "cache_limit", "table",     NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOnnO", kwlist, &numeric_names, &key_names,
                                     &code_plan, &cross_plan, &head, &cache_limit, &table)) {
        return -1;
    }
    encoder_clear(e);
    if (check_names(numeric_names, re_numeric_names, RE_N_NUMERIC, "numeric feature names") < 0 ||
        check_names(key_names, re_key_names, RE_N_KEYS, "categorical key names") < 0) {
        return -1;
    }
    if (head < 0 || head > RE_MAX_HEAD || cache_limit < 0) {
        PyErr_SetString(PyExc_ValueError, "bidder_cols or cache_limit out of range");
        return -1;
    }
    e->head = head;
    e->cache_limit = cache_limit;
    if (read_plan(code_plan, e->code, &e->n_code) < 0 ||
        read_plan(cross_plan, e->cross, &e->n_cross) < 0 ||
        get_float_buffer(table, "table", 2, 4, 0, &e->table) != 0) {
        encoder_clear(e);
        return -1;
    }
    e->have_table = 1;
    return 0;
}

static void encoder_dealloc(EncoderObject *e) {
    encoder_clear(e);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyMethodDef encoder_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))encoder_encode, METH_FASTCALL,
     "encode(req, now) -> (values, columns): the request-level values (numeric features, then "
     "codes) and the bidder-table columns to gather."},
    {"rows", (PyCFunction)(void (*)(void))encoder_rows, METH_FASTCALL,
     "rows(req, now, bidders, out): out[i, :r] = values, out[i, r + j] = "
     "table[bidders[i], columns[j]]."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "model_server.native._forest.RequestEncoder",
    .tp_doc = "Bid request to feature values and rows, as model_server.features does it.",
    .tp_basicsize = sizeof(EncoderObject),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)encoder_init,
    .tp_dealloc = (destructor)encoder_dealloc,
    .tp_methods = encoder_methods,
};

/* Called once from the module's init: the constants and the RequestEncoder type. */
static int request_encode_add_to(PyObject *module) {
    if (re_init_constants() < 0) {
        return -1;
    }
    return add_type(module, "RequestEncoder", &EncoderType);
}

#undef GET
#undef TRY

#endif
