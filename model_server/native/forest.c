/*
 * A small, dependency-free evaluator for XGBoost tree ensembles.
 *
 * Python parses the model (model_server/predictor.py) into flat arrays; this module validates
 * them once, re-lays them out for fast walks and evaluates float32 row buffers through the
 * buffer protocol, so a call costs about a microsecond plus the tree walks themselves.
 *
 * Semantics follow XGBoost's CPU predictor exactly:
 *   - a row goes left when x < split_condition (float32 compare); a missing value (NaN) goes to
 *     the node's default child;
 *   - the margin starts at the model's base margin and the leaf values are added tree by tree in
 *     float32, in model order;
 *   - the objective's transform (identity or XGBoost's sigmoid) turns the margin into the output.
 *
 * What keeps a step of a walk down to a handful of instructions:
 *   - missing values: each row is widened once to 2 * n_features values, the first half with NaN
 *     replaced by +inf (so it goes right, x < t being false) and the second with -inf (goes
 *     left). A node whose default is left reads the second half, so a walk never tests for NaN;
 *   - the next node is computed, not branched to: left + (x >= t);
 *   - every tree is walked for exactly its depth (a leaf above the bottom continues through
 *     nodes with a NaN threshold, and x >= NaN is false), so rows evaluated together stay in
 *     lockstep without branches and the CPU overlaps the memory loads of several rows;
 *   - trees up to PERFECT_MAX_DEPTH are stored as perfect binary trees (children of node i at
 *     2i+1 and 2i+2), which needs no child pointers at all. Deeper trees use linked nodes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "request_encode.h"
#include "request_path.h"
#include "request_scan.h"

#define BLOCK             16  /* rows walked together through one tree */
#define RELEASE_GIL_ROWS  64  /* below this, dropping the GIL costs more than it gives */
#define STACK_FEATURES    128 /* widened rows of up to this many features live on the stack */
#define PERFECT_MAX_DEPTH 10  /* deeper trees would waste too much memory when made perfect */
#define MAX_DEPTH         4096

#if defined(__GNUC__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

enum { TRANSFORM_IDENTITY = 0, TRANSFORM_SIGMOID = 1 };

/* A split of a perfect tree; a leaf above the bottom level has feature 0 and a NaN cond. */
typedef struct {
    uint32_t feature; /* index into the widened rows, times BLOCK (see widen_rows) */
    float cond;
} PerfectNode;

/* A node of a linked tree: the right child is left + 1, a leaf points to itself. */
typedef struct {
    uint32_t left;
    uint32_t feature; /* index into the widened rows, times BLOCK (see widen_rows) */
    float cond;       /* NaN for a leaf */
} LinkedNode;

typedef struct {
    PyObject_HEAD int perfect; /* which layout the trees use */
    PerfectNode *pnodes;       /* perfect: tree t at pnodes + node_offset[t] */
    LinkedNode *lnodes;        /* linked: tree t's root at lnodes[node_offset[t]] */
    float *leaf_value; /* perfect: bottom level of tree t at leaf_offset[t]; linked: per node */
    int32_t *node_offset;
    int32_t *leaf_offset;
    int32_t *depths;
    Py_ssize_t n_nodes; /* nodes in the model as given, for reporting */
    Py_ssize_t n_trees;
    Py_ssize_t n_features;
    float base_margin;
    int transform;
} ForestObject;

/* XGBoost's common::Sigmoid, so that outputs match bit for bit where possible. */
static inline float xgb_sigmoid(float x) {
    float e = -x;
    if (e > 88.7f) {
        e = 88.7f;
    }
    return 1.0f / (expf(e) + 1.0f);
}

static inline float apply_transform(int transform, float margin) {
    return transform == TRANSFORM_SIGMOID ? xgb_sigmoid(margin) : margin;
}

/* Rows [0, m) of x widened into w, see the header comment. The block's rows are interleaved
 * (value f of row j at w[f * BLOCK + j]) so that one base register serves every row of a block
 * and node features can be stored pre-multiplied by BLOCK. */
static void widen_rows(const float *x, Py_ssize_t m, Py_ssize_t n_features, float *w) {
    float *hi = w;
    float *lo = w + n_features * BLOCK;
    for (Py_ssize_t j = 0; j < m; j++) {
        const float *row = x + j * n_features;
        for (Py_ssize_t f = 0; f < n_features; f++) {
            const float v = row[f];
            const int missing = v != v;
            hi[f * BLOCK + j] = missing ? INFINITY : v;
            lo[f * BLOCK + j] = missing ? -INFINITY : v;
        }
    }
}

/* ---- evaluation: m rows at once (m is a constant where this is inlined) ----------------- */

static ALWAYS_INLINE void eval_perfect(const ForestObject *f, const float *w, Py_ssize_t m,
                                       float *out) {
    float acc[BLOCK];
    size_t idx[BLOCK]; /* 64-bit, so that node addresses need no extension */
    for (Py_ssize_t j = 0; j < m; j++) {
        acc[j] = f->base_margin;
    }
    for (Py_ssize_t t = 0; t < f->n_trees; t++) {
        const PerfectNode *nodes = f->pnodes + f->node_offset[t];
        const int32_t depth = f->depths[t];
        for (Py_ssize_t j = 0; j < m; j++) {
            idx[j] = 0;
        }
        for (int32_t d = 0; d < depth; d++) {
            for (Py_ssize_t j = 0; j < m; j++) {
                const PerfectNode *nd = &nodes[idx[j]];
                idx[j] = 2 * idx[j] + 1 + (w[nd->feature + j] >= nd->cond);
            }
        }
        /* After depth steps idx is on the bottom level, which starts at 2^depth - 1. */
        const float *leaves = f->leaf_value + f->leaf_offset[t];
        const size_t bottom = ((size_t)1 << depth) - 1;
        for (Py_ssize_t j = 0; j < m; j++) {
            acc[j] += leaves[idx[j] - bottom];
        }
    }
    for (Py_ssize_t j = 0; j < m; j++) {
        out[j] = apply_transform(f->transform, acc[j]);
    }
}

static ALWAYS_INLINE void eval_linked(const ForestObject *f, const float *w, Py_ssize_t m,
                                      float *out) {
    float acc[BLOCK];
    size_t idx[BLOCK];
    const LinkedNode *nodes = f->lnodes;
    for (Py_ssize_t j = 0; j < m; j++) {
        acc[j] = f->base_margin;
    }
    for (Py_ssize_t t = 0; t < f->n_trees; t++) {
        const size_t root = (size_t)f->node_offset[t];
        const int32_t depth = f->depths[t];
        for (Py_ssize_t j = 0; j < m; j++) {
            idx[j] = root;
        }
        for (int32_t d = 0; d < depth; d++) {
            for (Py_ssize_t j = 0; j < m; j++) {
                const LinkedNode *nd = &nodes[idx[j]];
                idx[j] = nd->left + (w[nd->feature + j] >= nd->cond);
            }
        }
        for (Py_ssize_t j = 0; j < m; j++) {
            acc[j] += f->leaf_value[idx[j]];
        }
    }
    for (Py_ssize_t j = 0; j < m; j++) {
        out[j] = apply_transform(f->transform, acc[j]);
    }
}

/* Separate copies for a full block, a single row and any other count, each fully unrolled. */
static void eval_perfect_block(const ForestObject *f, const float *w, float *out) {
    eval_perfect(f, w, BLOCK, out);
}
static void eval_perfect_one(const ForestObject *f, const float *w, float *out) {
    eval_perfect(f, w, 1, out);
}
static void eval_perfect_some(const ForestObject *f, const float *w, Py_ssize_t m, float *out) {
    eval_perfect(f, w, m, out);
}
static void eval_linked_block(const ForestObject *f, const float *w, float *out) {
    eval_linked(f, w, BLOCK, out);
}
static void eval_linked_one(const ForestObject *f, const float *w, float *out) {
    eval_linked(f, w, 1, out);
}
static void eval_linked_some(const ForestObject *f, const float *w, Py_ssize_t m, float *out) {
    eval_linked(f, w, m, out);
}

/* Returns -1 only when scratch memory could not be allocated (nothing is written then). */
static int eval_rows(const ForestObject *f, const float *x, Py_ssize_t n, float *out) {
    const Py_ssize_t nf = f->n_features;
    float stack_scratch[BLOCK * 2 * STACK_FEATURES];
    float *w = stack_scratch;
    if (nf > STACK_FEATURES) {
        w = malloc(sizeof(float) * (size_t)(BLOCK * 2 * nf));
        if (w == NULL) {
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < n; i += BLOCK) {
        const Py_ssize_t m = n - i < BLOCK ? n - i : BLOCK;
        widen_rows(x + i * nf, m, nf, w);
        if (f->perfect) {
            if (m == BLOCK) {
                eval_perfect_block(f, w, out + i);
            } else if (m == 1) {
                eval_perfect_one(f, w, out + i);
            } else {
                eval_perfect_some(f, w, m, out + i);
            }
        } else {
            if (m == BLOCK) {
                eval_linked_block(f, w, out + i);
            } else if (m == 1) {
                eval_linked_one(f, w, out + i);
            } else {
                eval_linked_some(f, w, m, out + i);
            }
        }
    }
    if (w != stack_scratch) {
        free(w);
    }
    return 0;
}

/* ---- construction ------------------------------------------------------------------------ */

static int is_format(const char *fmt, char code) {
    if (fmt == NULL) {
        return 0;
    }
    if (fmt[0] == '<' || fmt[0] == '=' || fmt[0] == '@') {
        fmt++;
    }
    return fmt[0] == code && fmt[1] == '\0';
}

/* A contiguous 1-D buffer of 4-byte items of the given kind ('f' float32, 'i' int32). */
static int get_vector(PyObject *obj, const char *name, char kind, Py_buffer *view) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
        return -1;
    }
    if (view->ndim != 1 || view->itemsize != 4 || !is_format(view->format, kind)) {
        PyErr_Format(PyExc_TypeError, "%s must be a 1-D contiguous %s array", name,
                     kind == 'f' ? "float32" : "int32");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static void forest_free_arrays(ForestObject *self) {
    free(self->pnodes);
    free(self->lnodes);
    free(self->leaf_value);
    free(self->node_offset);
    free(self->leaf_offset);
    free(self->depths);
    self->pnodes = NULL;
    self->lnodes = NULL;
    self->leaf_value = NULL;
    self->node_offset = NULL;
    self->leaf_offset = NULL;
    self->depths = NULL;
}

/* The model as given: linked nodes, children adjacent, leaves pointing to themselves. */
typedef struct {
    const int32_t *left;
    const int32_t *feature;
    const int32_t *dleft;
    const float *cond;
    Py_ssize_t n_features;
} Source;

static uint32_t widened_feature(const Source *src, Py_ssize_t i) {
    return (uint32_t)((src->feature[i] + (src->dleft[i] ? src->n_features : 0)) * BLOCK);
}

/* Copy the subtree at source node g into perfect slot p (depth d of a tree of depth `depth`).
 * Depth is bounded by PERFECT_MAX_DEPTH, so the recursion is shallow. */
static void fill_perfect(const Source *src, int32_t g, uint32_t p, int32_t d, int32_t depth,
                         PerfectNode *nodes, float *leaves) {
    if (d == depth) {
        leaves[p - ((1u << depth) - 1u)] = src->cond[g];
        return;
    }
    if (src->left[g] == g) {
        /* A leaf above the bottom: continue left through NaN thresholds to the bottom. */
        nodes[p].feature = 0;
        nodes[p].cond = NAN;
        fill_perfect(src, g, 2 * p + 1, d + 1, depth, nodes, leaves);
        return;
    }
    nodes[p].feature = widened_feature(src, g);
    nodes[p].cond = src->cond[g];
    fill_perfect(src, src->left[g], 2 * p + 1, d + 1, depth, nodes, leaves);
    fill_perfect(src, src->left[g] + 1, 2 * p + 2, d + 1, depth, nodes, leaves);
}

static int build_perfect(ForestObject *self, const Source *src, const int32_t *roots) {
    Py_ssize_t n_nodes = 0, n_leaves = 0;
    for (Py_ssize_t t = 0; t < self->n_trees; t++) {
        self->node_offset[t] = (int32_t)n_nodes;
        self->leaf_offset[t] = (int32_t)n_leaves;
        n_nodes += ((Py_ssize_t)1 << self->depths[t]) - 1;
        n_leaves += (Py_ssize_t)1 << self->depths[t];
        if (n_leaves > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "the model is too large");
            return -1;
        }
    }
    /* Unreachable slots (below a leaf, right side) stay zero: feature 0, cond 0. */
    self->pnodes = calloc((size_t)(n_nodes > 0 ? n_nodes : 1), sizeof(PerfectNode));
    self->leaf_value = calloc((size_t)n_leaves, sizeof(float));
    if (self->pnodes == NULL || self->leaf_value == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t t = 0; t < self->n_trees; t++) {
        fill_perfect(src, roots[t], 0, 0, self->depths[t], self->pnodes + self->node_offset[t],
                     self->leaf_value + self->leaf_offset[t]);
    }
    return 0;
}

static int build_linked(ForestObject *self, const Source *src, const int32_t *roots,
                        Py_ssize_t n_nodes) {
    self->lnodes = malloc(sizeof(LinkedNode) * (size_t)n_nodes);
    self->leaf_value = malloc(sizeof(float) * (size_t)n_nodes);
    if (self->lnodes == NULL || self->leaf_value == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n_nodes; i++) {
        const int is_leaf = src->left[i] == i;
        self->lnodes[i].left = (uint32_t)src->left[i];
        self->lnodes[i].feature = is_leaf ? 0u : widened_feature(src, i);
        self->lnodes[i].cond = is_leaf ? NAN : src->cond[i];
        self->leaf_value[i] = is_leaf ? src->cond[i] : 0.0f;
    }
    for (Py_ssize_t t = 0; t < self->n_trees; t++) {
        self->node_offset[t] = roots[t];
    }
    return 0;
}

/* Every node index, feature and threshold in range: evaluation then never reads out of bounds.
 * Depths are checked by walking each tree, so a wrong depth cannot send a walk off a tree. */
static int validate(const Source *src, Py_ssize_t n_nodes, const int32_t *roots,
                    const int32_t *depths, Py_ssize_t n_trees) {
    for (Py_ssize_t i = 0; i < n_nodes; i++) {
        const int is_leaf = src->left[i] == i;
        if (src->left[i] < 0 || (!is_leaf && src->left[i] >= n_nodes - 1) || src->feature[i] < 0 ||
            src->feature[i] >= src->n_features) {
            PyErr_Format(PyExc_ValueError, "node %zd has a child or feature out of range", i);
            return -1;
        }
        if (!is_leaf && (isnan(src->cond[i]) || src->cond[i] == -INFINITY)) {
            /* -inf would send a missing value right at a default-left node. */
            PyErr_Format(PyExc_ValueError, "node %zd has a NaN or -inf split condition", i);
            return -1;
        }
    }
    for (Py_ssize_t t = 0; t < n_trees; t++) {
        if (roots[t] < 0 || roots[t] >= n_nodes || depths[t] < 0 || depths[t] > MAX_DEPTH) {
            PyErr_Format(PyExc_ValueError, "tree %zd has a root or depth out of range", t);
            return -1;
        }
    }
    return 0;
}

/* The depth of the subtree at g, or -1 if it is deeper than limit (or has a cycle). */
static int32_t subtree_depth(const Source *src, int32_t g, int32_t limit) {
    if (src->left[g] == g) {
        return 0;
    }
    if (limit == 0) {
        return -1;
    }
    int32_t a = subtree_depth(src, src->left[g], limit - 1);
    if (a < 0) {
        return -1;
    }
    int32_t b = subtree_depth(src, src->left[g] + 1, limit - 1);
    if (b < 0) {
        return -1;
    }
    return 1 + (a > b ? a : b);
}

enum { V_LEFT, V_FEATURE, V_DEFAULT_LEFT, V_COND, V_ROOTS, V_DEPTHS, N_VECTORS };

static int forest_init(ForestObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {
        "left",        "feature",   "default_left",      "cond", "roots", "depths", "n_features",
        "base_margin", "transform", "perfect_max_depth", NULL};
    PyObject *objs[N_VECTORS];
    Py_ssize_t n_features;
    float base_margin;
    int transform;
    int perfect_max_depth = PERFECT_MAX_DEPTH;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOnfi|i", kwlist, &objs[V_LEFT],
                                     &objs[V_FEATURE], &objs[V_DEFAULT_LEFT], &objs[V_COND],
                                     &objs[V_ROOTS], &objs[V_DEPTHS], &n_features, &base_margin,
                                     &transform, &perfect_max_depth)) {
        return -1;
    }
    if (perfect_max_depth > PERFECT_MAX_DEPTH) {
        PyErr_Format(PyExc_ValueError, "perfect_max_depth must be at most %d", PERFECT_MAX_DEPTH);
        return -1;
    }
    if (n_features < 1 || n_features > INT32_MAX / (2 * BLOCK)) {
        PyErr_SetString(PyExc_ValueError, "n_features is out of range");
        return -1;
    }
    if (transform != TRANSFORM_IDENTITY && transform != TRANSFORM_SIGMOID) {
        PyErr_SetString(PyExc_ValueError, "transform must be 0 (identity) or 1 (sigmoid)");
        return -1;
    }

    Py_buffer v[N_VECTORS];
    const char *names[N_VECTORS] = {"left", "feature", "default_left", "cond", "roots", "depths"};
    const char kinds[N_VECTORS] = {'i', 'i', 'i', 'f', 'i', 'i'};
    int got = 0;
    int rc = -1;
    for (; got < N_VECTORS; got++) {
        if (get_vector(objs[got], names[got], kinds[got], &v[got]) != 0) {
            goto done;
        }
    }
    const Py_ssize_t n_nodes = v[V_LEFT].shape[0];
    const Py_ssize_t n_trees = v[V_ROOTS].shape[0];
    for (int k = V_FEATURE; k <= V_COND; k++) {
        if (v[k].shape[0] != n_nodes) {
            PyErr_Format(PyExc_ValueError, "%s has %zd entries, expected %zd (one per node)",
                         names[k], v[k].shape[0], n_nodes);
            goto done;
        }
    }
    if (v[V_DEPTHS].shape[0] != n_trees) {
        PyErr_SetString(PyExc_ValueError, "roots and depths must have one entry per tree");
        goto done;
    }
    if (n_nodes < 1 || n_trees < 1 || n_nodes >= INT32_MAX || n_trees >= INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "a forest needs at least one tree and one node");
        goto done;
    }
    const Source src = {v[V_LEFT].buf, v[V_FEATURE].buf, v[V_DEFAULT_LEFT].buf, v[V_COND].buf,
                        n_features};
    const int32_t *roots = v[V_ROOTS].buf, *depths = v[V_DEPTHS].buf;
    if (validate(&src, n_nodes, roots, depths, n_trees) != 0) {
        goto done;
    }
    int perfect = 1;
    for (Py_ssize_t t = 0; t < n_trees; t++) {
        if (subtree_depth(&src, roots[t], depths[t]) != depths[t]) {
            PyErr_Format(PyExc_ValueError, "tree %zd does not have the depth given", t);
            goto done;
        }
        if (depths[t] > perfect_max_depth) {
            perfect = 0;
        }
    }

    forest_free_arrays(self);
    self->n_trees = n_trees;
    self->node_offset = malloc(sizeof(int32_t) * (size_t)n_trees);
    self->leaf_offset = malloc(sizeof(int32_t) * (size_t)n_trees);
    self->depths = malloc(sizeof(int32_t) * (size_t)n_trees);
    if (self->node_offset == NULL || self->leaf_offset == NULL || self->depths == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    memcpy(self->depths, depths, sizeof(int32_t) * (size_t)n_trees);
    if ((perfect ? build_perfect(self, &src, roots) : build_linked(self, &src, roots, n_nodes)) !=
        0) {
        goto fail;
    }
    self->perfect = perfect;
    self->n_nodes = n_nodes;
    self->n_features = n_features;
    self->base_margin = base_margin;
    self->transform = transform;
    rc = 0;
    goto done;
fail:
    forest_free_arrays(self);
    self->n_trees = 0;
done:
    for (int k = 0; k < got; k++) {
        PyBuffer_Release(&v[k]);
    }
    return rc;
}

static void forest_dealloc(ForestObject *self) {
    forest_free_arrays(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---- prediction -------------------------------------------------------------------------- */

static PyObject *forest_predict(ForestObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "predict(rows, out) takes exactly 2 arguments");
        return NULL;
    }
    if (self->depths == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Forest was not initialised");
        return NULL;
    }
    Py_buffer in, out;
    if (PyObject_GetBuffer(args[0], &in, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
        return NULL;
    }
    if (in.ndim != 2 || in.itemsize != 4 || !is_format(in.format, 'f') ||
        in.shape[1] != self->n_features) {
        PyErr_Format(PyExc_ValueError,
                     "rows must be a C-contiguous float32 array of shape (n, %zd)",
                     self->n_features);
        PyBuffer_Release(&in);
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &out, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) !=
        0) {
        PyBuffer_Release(&in);
        return NULL;
    }
    const Py_ssize_t n = in.shape[0];
    if (out.ndim != 1 || out.itemsize != 4 || !is_format(out.format, 'f') || out.shape[0] < n) {
        PyErr_Format(PyExc_ValueError, "out must be a writable float32 array of at least %zd", n);
        PyBuffer_Release(&in);
        PyBuffer_Release(&out);
        return NULL;
    }
    int rc;
    if (n >= RELEASE_GIL_ROWS) {
        Py_BEGIN_ALLOW_THREADS rc = eval_rows(self, in.buf, n, out.buf);
        Py_END_ALLOW_THREADS
    } else {
        rc = eval_rows(self, in.buf, n, out.buf);
    }
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    if (rc != 0) {
        return PyErr_NoMemory();
    }
    Py_RETURN_NONE;
}

static PyObject *forest_get_n_trees(ForestObject *self, void *closure) {
    (void)closure;
    return PyLong_FromSsize_t(self->n_trees);
}

static PyObject *forest_get_n_nodes(ForestObject *self, void *closure) {
    (void)closure;
    return PyLong_FromSsize_t(self->n_nodes);
}

static PyObject *forest_get_n_features(ForestObject *self, void *closure) {
    (void)closure;
    return PyLong_FromSsize_t(self->n_features);
}

static PyObject *forest_get_layout(ForestObject *self, void *closure) {
    (void)closure;
    return PyUnicode_FromString(self->perfect ? "perfect" : "linked");
}

static PyMethodDef forest_methods[] = {
    {"predict", (PyCFunction)(void (*)(void))forest_predict, METH_FASTCALL,
     "predict(rows, out): write one output per row of a (n, n_features) float32 array "
     "into the float32 array out."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef forest_getset[] = {
    {"n_trees", (getter)forest_get_n_trees, NULL, "number of trees", NULL},
    {"n_nodes", (getter)forest_get_n_nodes, NULL, "number of nodes in the model", NULL},
    {"n_features", (getter)forest_get_n_features, NULL, "row width the forest expects", NULL},
    {"layout", (getter)forest_get_layout, NULL, "'perfect' or 'linked' trees", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ForestType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "model_server.native._forest.Forest",
    .tp_doc = "A tree ensemble laid out for fast evaluation of float32 rows.",
    .tp_basicsize = sizeof(ForestObject),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)forest_init,
    .tp_dealloc = (destructor)forest_dealloc,
    .tp_methods = forest_methods,
    .tp_getset = forest_getset,
};

/* Needs the Forest type and eval_rows above, and the encoder of request_encode.h. */
#include "score_path.h"

static PyMethodDef module_methods[] = {
    REQUEST_PATH_METHODS,
    {"select_request", select_request, METH_O, select_request_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef forest_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "model_server.native._forest",
    .m_doc = "Native evaluator for XGBoost tree ensembles, and the request path's row and reply "
             "helpers (request_path.h).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__forest(void) {
    PyObject *m = PyModule_Create(&forest_module);
    if (m == NULL) {
        return NULL;
    }
    if (add_type(m, "Forest", &ForestType) < 0 || request_encode_add_to(m) < 0 ||
        score_path_add_to(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "TRANSFORM_IDENTITY", TRANSFORM_IDENTITY) < 0 ||
        PyModule_AddIntConstant(m, "TRANSFORM_SIGMOID", TRANSFORM_SIGMOID) < 0 ||
        PyModule_AddIntConstant(m, "PERFECT_MAX_DEPTH", PERFECT_MAX_DEPTH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
