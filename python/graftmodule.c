// The `graft` Python module (CPython C API; `make python` builds build/python/graft*.so, linked with
// libgraft.a so that it needs nothing but Python, NumPy and the Debian libraries graft uses):
//   graft.open(path) → Model: .path, .names, .config (dict), len(), `in`, .dtype(name), .shape(name),
//       model[name] → a read-only NumPy array that views the mapped file (no copy; BF16 and the FP8
//       types as their raw uint16 / uint8 bits), model.to_numpy(name, "float32") → a converted copy;
//   graft.merge(config, out, threads=0, seed=0, force=False): config is a MergeKit YAML string, a path
//       to one, or a dict (dumped with PyYAML); model paths are relative to the config file (a string
//       or dict: to the current directory);
//   graft.eval_ppl(model, texts, ctx=512, …) → dict as `graft eval --json`; graft.convert(model, out,
//       dtype); graft.extract_lora(base, model, out, rank=…) → {module: relative error};
//   errors raise graft.Error subclasses (UsageError, InputError, ConfigError for the CLI's exit codes
//       2, 3, 4; Error itself for 1) whose .exit_code and .status carry the class, str() the one line.
// Long calls (open, merge, eval_ppl, convert, extract_lora) release the GIL; Ctrl-C interrupts merge,
// eval_ppl, convert and extract_lora (each stops at its next chunk, batch or module; no output).
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include "graft/graft.h"
#include "graft/eval.h"
#include "graft/gguf.h"
#include "graft/tokenizer.h"

static PyObject *Error, *UsageError, *InputError, *ConfigError;

// Raise the graft.Error subclass of the status's exit code, with the library's one-line message.
static PyObject *raise(int status, const struct graft_err *err) {
    int code = graft_status_exit_code(status);
    PyObject *cls = code == 2 ? UsageError : code == 3 ? InputError : code == 4 ? ConfigError : Error;
    const char *m = err && err->msg[0] ? err->msg : graft_status_str(status);
    PyObject *msg = PyUnicode_DecodeUTF8(m, (Py_ssize_t)strlen(m), "surrogateescape"); // paths need not be UTF-8
    PyObject *exc = msg ? PyObject_CallOneArg(cls, msg) : NULL;
    Py_XDECREF(msg);
    if (!exc) return NULL;
    PyObject *c = PyLong_FromLong(code), *st = PyUnicode_FromString(graft_status_name(status));
    if (c && st && PyObject_SetAttrString(exc, "exit_code", c) == 0 && PyObject_SetAttrString(exc, "status", st) == 0) PyErr_SetObject(cls, exc);
    Py_XDECREF(c), Py_XDECREF(st), Py_DECREF(exc);
    return NULL;
}

// Worker threads: the given count, or every CPU.
static int n_threads_arg(int t) { return t > 0 ? t : graft_n_cpus(); }
// threads as the CLI takes them: 0 (all CPUs) to 1024
static bool threads_ok(int t) {
    if (t >= 0 && t <= 1024) return true;
    PyErr_Format(PyExc_ValueError, "threads must be 0 (all CPUs) to 1024, got %d", t);
    return false;
}
// An unsigned 64-bit argument (O&): OverflowError for negatives and values past 2^64 − 1 ("K" wraps them).
static int u64_conv(PyObject *o, void *out) {
    PyObject *i = PyNumber_Index(o);
    unsigned long long v = i ? PyLong_AsUnsignedLongLong(i) : 0;
    Py_XDECREF(i);
    if (!i || (v == (unsigned long long)-1 && PyErr_Occurred())) return 0;
    *(unsigned long long *)out = v;
    return 1;
}

// ---- Model -------------------------------------------------------------------------------------------

typedef struct {
    PyObject_HEAD
    struct graft_model *m;
} Model;

static void model_dealloc(Model *self) {
    graft_model_close(self->m);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static const struct graft_model_tensor *find(Model *self, PyObject *name) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(name, &n);
    if (!s) return NULL;
    const struct graft_model_tensor *t = graft_model_find(self->m, s, (size_t)n);
    if (!t) PyErr_Format(PyExc_KeyError, "%R", name);
    return t;
}

// The NumPy dtype string that views a graft dtype's bytes as they are (NULL: none).
static const char *np_view(enum graft_dtype d) {
    switch (d) {
    case GRAFT_DTYPE_F64: return "<f8";
    case GRAFT_DTYPE_F32: return "<f4";
    case GRAFT_DTYPE_F16: return "<f2";
    case GRAFT_DTYPE_BF16: return "<u2"; // NumPy has no bfloat16: the raw bits (to_numpy converts)
    case GRAFT_DTYPE_I64: return "<i8";
    case GRAFT_DTYPE_I32: return "<i4";
    case GRAFT_DTYPE_I16: return "<i2";
    case GRAFT_DTYPE_I8: return "i1";
    case GRAFT_DTYPE_U8: return "u1";
    case GRAFT_DTYPE_BOOL: return "?";
    case GRAFT_DTYPE_F8_E4M3: case GRAFT_DTYPE_F8_E5M2: return "u1";
    default: return NULL;
    }
}

static PyObject *shape_tuple(const struct graft_tensor_info *i) {
    PyObject *s = PyTuple_New(i->n_dims);
    for (int d = 0; s && d < i->n_dims; d++) {
        PyObject *v = PyLong_FromUnsignedLongLong(i->ne[d]);
        if (!v) { Py_CLEAR(s); break; }
        PyTuple_SET_ITEM(s, d, v);
    }
    return s;
}

// The bytes of one tensor in the mapping, as a read-only buffer that holds its Model: NumPy arrays
// made from it keep the mapping alive however long they live.
typedef struct {
    PyObject_HEAD
    PyObject   *model;
    const void *p;
    Py_ssize_t  n;
} TensorBuf;

static void tbuf_dealloc(TensorBuf *self) {
    Py_XDECREF(self->model);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int tbuf_getbuffer(TensorBuf *self, Py_buffer *view, int flags) {
    return PyBuffer_FillInfo(view, (PyObject *)self, (void *)self->p, self->n, 1, flags);
}

static PyBufferProcs tbuf_buffer = {.bf_getbuffer = (getbufferproc)tbuf_getbuffer};
static PyTypeObject TensorBufType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "graft._TensorBuf",
    .tp_basicsize = sizeof(TensorBuf),
    .tp_dealloc = (destructor)tbuf_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_as_buffer = &tbuf_buffer,
};

// numpy.frombuffer(the tensor's bytes, dtype).reshape(shape): no copy, read-only.
static PyObject *model_getitem(Model *self, PyObject *name) {
    const struct graft_model_tensor *t = find(self, name);
    if (!t) return NULL;
    const char *dt = np_view(t->info->dtype);
    if (!dt) return PyErr_Format(PyExc_TypeError, "tensor %R: dtype %s has no NumPy view", name, graft_dtype_traits(t->info->dtype)->name);
    TensorBuf *tb = PyObject_New(TensorBuf, &TensorBufType);
    if (!tb) return NULL;
    tb->model = (PyObject *)self, Py_INCREF(self);
    tb->p = graft_model_data(self->m, t), tb->n = (Py_ssize_t)t->info->n_bytes;
    PyObject *np = PyImport_ImportModule("numpy"), *flat = NULL, *shape = NULL, *arr = NULL;
    if (np && (flat = PyObject_CallMethod(np, "frombuffer", "Os", (PyObject *)tb, dt)) && (shape = shape_tuple(t->info)))
        arr = PyObject_CallMethod(flat, "reshape", "(O)", shape); // (a lone "O" tuple would be the argument list: shape () broke)
    Py_XDECREF(np), Py_XDECREF(flat), Py_XDECREF(shape), Py_DECREF(tb);
    return arr;
}

static Py_ssize_t model_len(Model *self) { return (Py_ssize_t)graft_model_n_tensors(self->m); }

static int model_contains(Model *self, PyObject *name) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(name, &n);
    if (!s) return -1;
    return graft_model_find(self->m, s, (size_t)n) != NULL;
}

static PyObject *model_names(Model *self, void *unused) {
    (void)unused;
    size_t n = graft_model_n_tensors(self->m);
    PyObject *l = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; l && i < n; i++) {
        const struct graft_tensor_info *t = graft_model_tensor(self->m, i)->info;
        PyObject *v = PyUnicode_DecodeUTF8(t->name, (Py_ssize_t)t->name_len, "surrogateescape");
        if (!v) { Py_CLEAR(l); break; }
        PyList_SET_ITEM(l, (Py_ssize_t)i, v);
    }
    return l;
}

static PyObject *model_config(Model *self, void *unused) {
    (void)unused;
    const char *c = graft_model_config_json(self->m);
    if (!c) Py_RETURN_NONE;
    PyObject *json = PyImport_ImportModule("json");
    PyObject *r = json ? PyObject_CallMethod(json, "loads", "s", c) : NULL;
    Py_XDECREF(json);
    return r;
}

static PyObject *model_path(Model *self, void *unused) {
    (void)unused;
    return PyUnicode_DecodeFSDefault(graft_model_path(self->m)); // (as the module reads paths: surrogateescape)
}

static PyObject *model_dtype(Model *self, PyObject *name) {
    const struct graft_model_tensor *t = find(self, name);
    return t ? PyUnicode_FromString(graft_dtype_traits(t->info->dtype)->name) : NULL;
}

static PyObject *model_shape(Model *self, PyObject *name) {
    const struct graft_model_tensor *t = find(self, name);
    return t ? shape_tuple(t->info) : NULL;
}

// A converted copy: float32 (any floating dtype, as graft computes) or the stored type ("raw").
static PyObject *model_to_numpy(Model *self, PyObject *args, PyObject *kw) {
    static char *kwl[] = {"name", "dtype", NULL};
    PyObject *name;
    const char *to = "float32";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "U|s", kwl, &name, &to)) return NULL;
    const struct graft_model_tensor *t = find(self, name);
    if (!t) return NULL;
    if (!strcmp(to, "raw")) {
        PyObject *v = model_getitem(self, name), *c = v ? PyObject_CallMethod(v, "copy", NULL) : NULL;
        Py_XDECREF(v);
        return c;
    }
    if (strcmp(to, "float32")) return PyErr_Format(PyExc_ValueError, "to_numpy: dtype must be \"float32\" or \"raw\", not \"%s\"", to);
    if (!graft_dtype_traits(t->info->dtype)->to_f32)
        return PyErr_Format(PyExc_TypeError, "tensor %R: %s does not convert to float32", name, graft_dtype_traits(t->info->dtype)->name);
    PyObject *np = PyImport_ImportModule("numpy");
    PyObject *shape = shape_tuple(t->info);
    PyObject *arr = np && shape ? PyObject_CallMethod(np, "empty", "Os", shape, "<f4") : NULL;
    Py_XDECREF(np), Py_XDECREF(shape);
    if (!arr) return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(arr, &b, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) { Py_DECREF(arr); return NULL; }
    if (t->info->n_elem) { // (an empty tensor has no data pointer)
        Py_BEGIN_ALLOW_THREADS
        graft_row_to_f32(t->info->dtype, graft_model_data(self->m, t), b.buf, (size_t)t->info->n_elem);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&b);
    return arr;
}

static PyMappingMethods model_mapping = {.mp_length = (lenfunc)model_len, .mp_subscript = (binaryfunc)model_getitem};
static PySequenceMethods model_sequence = {.sq_contains = (objobjproc)model_contains};
static PyGetSetDef model_getset[] = {{"names", (getter)model_names, NULL, "tensor names, in file order", NULL},
                                     {"config", (getter)model_config, NULL, "config.json as a dict (None without one)", NULL},
                                     {"path", (getter)model_path, NULL, "the path opened", NULL},
                                     {NULL}};
static PyMethodDef model_methods[] = {{"dtype", (PyCFunction)model_dtype, METH_O, "dtype(name) → the stored dtype's name"},
                                      {"shape", (PyCFunction)model_shape, METH_O, "shape(name) → tuple"},
                                      {"to_numpy", (PyCFunction)(void (*)(void))model_to_numpy, METH_VARARGS | METH_KEYWORDS,
                                       "to_numpy(name, dtype=\"float32\") → a converted copy (\"raw\": a copy of the stored bytes)"},
                                      {NULL}};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "graft.Model",
    .tp_basicsize = sizeof(Model),
    .tp_dealloc = (destructor)model_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A read-only model (folder, .safetensors or .gguf file) opened by graft.open().",
    .tp_as_mapping = &model_mapping,
    .tp_as_sequence = &model_sequence,
    .tp_getset = model_getset,
    .tp_methods = model_methods,
};

// Open a path (str or bytes) as a model, GIL released; 0, or −1 with the graft.Error raised.
static int open_path(PyObject *path, struct graft_model **out) {
    PyObject *b = NULL;
    if (!PyUnicode_FSConverter(path, &b)) return -1;
    struct graft_err err = {0};
    int rc;
    const char *p = PyBytes_AS_STRING(b);
    Py_BEGIN_ALLOW_THREADS
    rc = graft_model_open(p, out, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(b);
    return rc ? (raise(rc, &err), -1) : 0;
}

static PyObject *py_open(PyObject *mod, PyObject *arg) {
    (void)mod;
    struct graft_model *m = NULL;
    if (open_path(arg, &m)) return NULL;
    Model *self = PyObject_New(Model, &ModelType);
    if (!self) { graft_model_close(m); return NULL; }
    self->m = m;
    return (PyObject *)self;
}

// ---- merge -------------------------------------------------------------------------------------------

// A library call on a helper thread while this one, GIL released, waits in steps of 100 ms and between
// them lets Python run its signal handlers: Ctrl-C sets the call's cancel flag, the call stops at its
// next chunk (or batch, or module) and leaves no output, and the KeyboardInterrupt propagates. Returns
// 0 when the call ran to its end (its status in j->rc), −2 when a signal handler raised, −1 when no
// thread started.
struct cjob {
    int (*call)(struct cjob *j);
    void *a[6];                // the call's arguments
    volatile int cancel;
    int rc;
    struct graft_err err;
    bool done;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void *cjob_main(void *arg) {
    struct cjob *j = arg;
    int rc = j->call(j);
    pthread_mutex_lock(&j->mu);
    j->rc = rc, j->done = true;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

static int run_cancellable(struct cjob *j) {
    pthread_t th;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    if (pthread_create(&th, NULL, cjob_main, j)) {
        pthread_mutex_destroy(&j->mu), pthread_cond_destroy(&j->cv);
        PyErr_SetString(PyExc_RuntimeError, "cannot start a thread");
        return -1;
    }
    int raised = 0;
    for (;;) {
        bool done;
        Py_BEGIN_ALLOW_THREADS
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_mutex_lock(&j->mu);
        if (!j->done) pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        done = j->done;
        pthread_mutex_unlock(&j->mu);
        Py_END_ALLOW_THREADS
        if (done) break;
        if (!raised && PyErr_CheckSignals() < 0) raised = 1, __atomic_store_n(&j->cancel, 1, __ATOMIC_RELAXED); // then wait for it to stop
    }
    Py_BEGIN_ALLOW_THREADS
    pthread_join(th, NULL);
    Py_END_ALLOW_THREADS
    pthread_mutex_destroy(&j->mu), pthread_cond_destroy(&j->cv);
    // a signal that came after the call's last cancellation point: the output is complete, so the call
    // succeeds and the interrupt is delivered right after it returns (a KeyboardInterrupt here would
    // claim nothing was written)
    if (raised && j->rc == GRAFT_OK) PyErr_Clear(), PyErr_SetInterrupt(), raised = 0;
    return raised ? -2 : 0;
}

static int call_merge(struct cjob *j) {
    struct graft_merge_options *o = j->a[2];
    o->cancel = &j->cancel;
    return graft_merge(j->a[0], j->a[1], o, &j->err);
}
static int call_convert(struct cjob *j) {
    struct graft_convert_params *p = j->a[2];
    p->cancel = &j->cancel;
    return graft_convert(j->a[0], j->a[1], p, &j->err);
}
static int call_extract(struct cjob *j) {
    struct graft_lora_extract_params *p = j->a[3];
    p->cancel = &j->cancel;
    return graft_lora_extract(j->a[0], j->a[1], j->a[2], p, j->a[4], &j->err);
}
static int call_ppl(struct cjob *j) {
    struct graft_ppl_opts *o = j->a[4];
    o->cancel = &j->cancel;
    return graft_eval_ppl(j->a[0], j->a[1], j->a[2], *(int *)j->a[3], o, j->a[5], &j->err);
}

static PyObject *py_merge(PyObject *mod, PyObject *args, PyObject *kw) {
    (void)mod;
    static char *kws[] = {"config", "out", "threads", "seed", "force", NULL};
    PyObject *config, *outp = NULL, *text = NULL;
    int threads = 0, force = 0;
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO&|iO&p", kws, &config, PyUnicode_FSConverter, &outp, &threads, u64_conv, &seed, &force)) return NULL;
    if (!threads_ok(threads)) { Py_DECREF(outp); return NULL; }
    const char *path = "graft.merge.yml"; // names a text config; anchors its relative model paths at the cwd
    PyObject *pathb = NULL;
    if (PyDict_Check(config)) { // a dict: the same schema, as YAML
        PyObject *yaml = PyImport_ImportModule("yaml");
        text = yaml ? PyObject_CallMethod(yaml, "safe_dump", "O", config) : NULL;
        Py_XDECREF(yaml);
        if (!text) { Py_DECREF(outp); return NULL; }
    } else if (PyUnicode_Check(config)) { // an existing file is a path; anything else YAML text
        struct stat sb;
        if (!PyUnicode_FSConverter(config, &pathb)) { Py_DECREF(outp); return NULL; }
        if (!strchr(PyBytes_AS_STRING(pathb), '\n') && stat(PyBytes_AS_STRING(pathb), &sb) == 0 && S_ISREG(sb.st_mode)) path = PyBytes_AS_STRING(pathb);
        else if (!PyUnicode_AsUTF8(config)) { Py_DECREF(pathb), Py_DECREF(outp); return NULL; }
        else text = config, Py_INCREF(text);
    } else {
        Py_DECREF(outp);
        return PyErr_Format(PyExc_TypeError, "merge: config must be a YAML string, a path or a dict");
    }
    struct graft_merge_options o = graft_merge_default_options();
    o.n_threads = n_threads_arg(threads);
    o.seed = seed;
    o.writer_flags = force ? GRAFT_WRITER_FORCE : 0;
    o.config_text = text ? PyUnicode_AsUTF8(text) : NULL;
    struct cjob j = {.call = call_merge, .a = {(void *)path, PyBytes_AS_STRING(outp), &o}};
    int rc = run_cancellable(&j);
    Py_XDECREF(text), Py_XDECREF(pathb), Py_DECREF(outp);
    if (rc == -2) return NULL; // KeyboardInterrupt (or another signal's exception) is set
    if (j.rc) return raise(j.rc, &j.err);
    Py_RETURN_NONE;
}

// A model argument: a Model (borrowed) or a path (opened here; *own set so the caller closes it).
static struct graft_model *model_arg(PyObject *o, struct graft_model **own) {
    *own = NULL;
    if (PyObject_TypeCheck(o, &ModelType)) return ((Model *)o)->m;
    return open_path(o, own) ? NULL : *own;
}

// ---- eval_ppl ----------------------------------------------------------------------------------------

// eval_ppl(model, texts, ctx=512, stride=0, batch=1, threads=0, bos=None, matmul="f32") → dict, as
// `graft eval --json` (matmul: its --matmul): texts are strings (tokenized with the model's tokenizer.json
// / GGUF vocabulary) or lists of token ids.
static PyObject *py_eval_ppl(PyObject *mod, PyObject *args, PyObject *kw) {
    (void)mod;
    static char *kws[] = {"model", "texts", "ctx", "stride", "batch", "threads", "bos", "matmul", NULL};
    PyObject *mo, *texts, *bos_o = Py_None;
    int ctx = 512, stride = 0, batch = 1, threads = 0;
    const char *matmul = "f32";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|iiiiOs", kws, &mo, &texts, &ctx, &stride, &batch, &threads, &bos_o, &matmul)) return NULL;
    if (!threads_ok(threads)) return NULL;
    if (ctx < 2 || ctx > (1 << 20) || batch < 1 || batch > 4096 || stride < 0 || stride > (1 << 20)) // (the CLI's ranges; stride 0: ctx)
        return PyErr_Format(PyExc_ValueError, "eval_ppl: ctx must be 2 to 1048576, batch 1 to 4096 and stride 0 to 1048576");
    int bos_set = bos_o == Py_None ? -1 : PyObject_IsTrue(bos_o); // any truth value (numpy's bool too), None: the model's
    if (bos_o != Py_None && bos_set < 0) return NULL;
    if (strcmp(matmul, "f32") && strcmp(matmul, "bf16")) return PyErr_Format(PyExc_ValueError, "eval_ppl: matmul is \"f32\" or \"bf16\", got \"%s\"", matmul);
    if (PyUnicode_Check(texts)) return PyErr_Format(PyExc_TypeError, "eval_ppl: texts is a list of strings (or of token-id lists)");
    PyObject *seq = PySequence_Tuple(texts); // immutable copies: no Python code can resize them under us
    if (!seq) return NULL;
    Py_ssize_t nd = PyTuple_GET_SIZE(seq);
    if (nd < 1) { Py_DECREF(seq); return PyErr_Format(PyExc_ValueError, "eval_ppl: no texts"); }
    struct graft_model *own = NULL, *m = NULL;
    struct graft_gguf *gg = NULL;
    struct graft_llama *L = NULL;
    struct graft_tokenizer *tk = NULL;
    int32_t **ids = PyMem_Calloc((size_t)nd, sizeof *ids);
    size_t *lens = PyMem_Calloc((size_t)nd, sizeof *lens);
    struct graft_err err = {0};
    int rc = GRAFT_OK;
    PyObject *res = NULL;
    if (!ids || !lens) { PyErr_NoMemory(); goto out; }
    // a GGUF path opens as llama.cpp's file (its vocabulary); anything else as a model
    PyObject *pb = NULL;
    bool is_gguf = false;
    if (!PyObject_TypeCheck(mo, &ModelType)) {
        if (!PyUnicode_FSConverter(mo, &pb)) goto out;
        is_gguf = graft_gguf_sniff(PyBytes_AS_STRING(pb));
    }
    if (is_gguf) {
        const char *p = PyBytes_AS_STRING(pb);
        Py_BEGIN_ALLOW_THREADS
        rc = graft_gguf_open(p, &gg, &err);
        if (!rc) rc = graft_llama_open_gguf(gg, n_threads_arg(threads), &L, &err);
        if (!rc) rc = graft_tokenizer_load_gguf(gg, p, &tk, &err);
        Py_END_ALLOW_THREADS
    } else {
        if (!(m = model_arg(mo, &own))) { Py_XDECREF(pb); goto out; }
        Py_BEGIN_ALLOW_THREADS
        rc = graft_llama_open(m, n_threads_arg(threads), &L, &err);
        if (!rc && graft_model_is_dir(m)) rc = graft_tokenizer_load(graft_model_dir(m), &tk, &err);
        Py_END_ALLOW_THREADS
    }
    Py_XDECREF(pb);
    if (rc == GRAFT_E_NOTFOUND && L) graft_err_clear(&err), rc = GRAFT_OK, tk = NULL; // ids only
    if (rc) { raise(rc, &err); goto out; }
    graft_llama_set_matmul(L, matmul[0] == 'b' ? GRAFT_MATMUL_BF16 : GRAFT_MATMUL_F32);
    for (Py_ssize_t d = 0; d < nd; d++) {
        PyObject *t = PyTuple_GET_ITEM(seq, d);
        if (PyUnicode_Check(t)) {
            Py_ssize_t n;
            const char *s = PyUnicode_AsUTF8AndSize(t, &n);
            if (!s) goto out;
            if (!tk) { PyErr_Format(PyExc_ValueError, "eval_ppl: the model has no tokenizer; give token-id lists"); goto out; }
            // (the GIL released: seq holds the str, whose UTF-8 bytes are immutable)
            Py_BEGIN_ALLOW_THREADS
            rc = graft_tokenizer_encode(tk, s, (size_t)n, &ids[d], &lens[d], &err);
            Py_END_ALLOW_THREADS
            if (rc) { raise(rc, &err); goto out; }
        } else {
            PyObject *q = PySequence_Tuple(t);
            if (!q) goto out;
            Py_ssize_t n = PyTuple_GET_SIZE(q);
            if (!(ids[d] = malloc((size_t)(n ? n : 1) * sizeof **ids))) { Py_DECREF(q); PyErr_NoMemory(); goto out; }
            for (Py_ssize_t i = 0; i < n; i++) {
                long v = PyLong_AsLong(PyTuple_GET_ITEM(q, i));
                if (v == -1 && PyErr_Occurred()) { Py_DECREF(q); goto out; }
                if (v < 0 || v >= graft_llama_vocab(L)) { Py_DECREF(q); PyErr_Format(PyExc_ValueError, "eval_ppl: token id %ld outside the vocabulary", v); goto out; }
                ids[d][i] = (int32_t)v;
            }
            lens[d] = (size_t)n;
            Py_DECREF(q);
        }
    }
    // BOS as graft eval takes it: the GGUF metadata's, then the tokenizer's; bos=False / True force it
    int32_t bos = is_gguf ? graft_gguf_bos(gg) : -1;
    if (tk) bos = graft_tokenizer_bos(tk);
    if (bos_set == 0) bos = -1;
    else if (bos_set == 1 && bos < 0) { PyErr_Format(PyExc_ValueError, "eval_ppl: bos=True, but the model names no BOS token"); goto out; }
    struct graft_ppl_opts po = {ctx, stride, batch, bos, 0, NULL, NULL, NULL, NULL};
    struct graft_ppl_result r;
    int ndi = (int)nd;
    struct cjob j = {.call = call_ppl, .a = {L, ids, lens, &ndi, &po, &r}};
    if (run_cancellable(&j)) goto out;
    if (j.rc) { raise(j.rc, &j.err); goto out; }
    double mean = r.scored ? r.nll / (double)r.scored : 0;
    res = Py_BuildValue("{s:d, s:d, s:K, s:K, s:K, s:i, s:i, s:d, s:d}", "nll", mean, "perplexity", exp(mean), "tokens_scored",
                        (unsigned long long)r.scored, "positions", (unsigned long long)r.positions, "windows", (unsigned long long)r.windows,
                        "ctx", ctx, "bos", (int)bos, "seconds", r.seconds, "tokens_per_second", r.seconds > 0 ? (double)r.positions / r.seconds : 0.0);
out:
    for (Py_ssize_t d = 0; ids && d < nd; d++) free(ids[d]);
    PyMem_Free(ids), PyMem_Free(lens);
    graft_tokenizer_free(tk), graft_llama_free(L), graft_gguf_close(gg), graft_model_close(own);
    Py_DECREF(seq);
    return res;
}

// ---- convert, extract_lora ---------------------------------------------------------------------------

// convert(model, out, dtype, threads=0, shard_size=0, force=False): `graft convert IN OUT --dtype T`.
static PyObject *py_convert(PyObject *mod, PyObject *args, PyObject *kw) {
    (void)mod;
    static char *kws[] = {"model", "out", "dtype", "threads", "shard_size", "force", NULL};
    PyObject *mo, *outp;
    const char *dt;
    int threads = 0, force = 0;
    unsigned long long shard = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO&s|iO&p", kws, &mo, PyUnicode_FSConverter, &outp, &dt, &threads, u64_conv, &shard, &force)) return NULL;
    if (!threads_ok(threads)) { Py_DECREF(outp); return NULL; }
    int d = graft_dtype_from_name(dt, strlen(dt));
    if (d < 0 || !graft_dtype_traits((enum graft_dtype)d)->is_float) {
        Py_DECREF(outp);
        return PyErr_Format(PyExc_ValueError, "convert: dtype must be a floating type (F32, F16, BF16, F8_E4M3, …), not \"%s\"", dt);
    }
    struct graft_model *own, *m = model_arg(mo, &own);
    if (!m) { Py_DECREF(outp); return NULL; }
    struct graft_convert_params p = graft_convert_default_params();
    p.dtype = (enum graft_dtype)d, p.n_threads = n_threads_arg(threads), p.max_shard_bytes = shard, p.writer_flags = force ? GRAFT_WRITER_FORCE : 0;
    struct cjob j = {.call = call_convert, .a = {m, PyBytes_AS_STRING(outp), &p}};
    int rc = run_cancellable(&j);
    graft_model_close(own), Py_DECREF(outp);
    if (rc) return NULL;
    if (j.rc) return raise(j.rc, &j.err);
    Py_RETURN_NONE;
}

// extract_lora(base, model, out, rank=128, threads=0, force=False) → {module: ‖Δ − B·A‖/‖Δ‖, or None
// for a module saved whole}.
static PyObject *py_extract_lora(PyObject *mod, PyObject *args, PyObject *kw) {
    (void)mod;
    static char *kws[] = {"base", "model", "out", "rank", "threads", "force", NULL};
    PyObject *bo, *fo, *outp;
    int rank = 128, threads = 0, force = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO&|iip", kws, &bo, &fo, PyUnicode_FSConverter, &outp, &rank, &threads, &force)) return NULL;
    if (!threads_ok(threads)) { Py_DECREF(outp); return NULL; }
    struct graft_model *ob = NULL, *of = NULL, *b = model_arg(bo, &ob), *f = b ? model_arg(fo, &of) : NULL;
    if (!b || !f) { graft_model_close(ob), graft_model_close(of), Py_DECREF(outp); return NULL; }
    struct graft_lora_extract_params p = graft_lora_extract_default_params();
    p.max_rank = rank, p.n_threads = n_threads_arg(threads), p.writer_flags = force ? GRAFT_WRITER_FORCE : 0;
    struct graft_lora_report rep = {0};
    struct cjob j = {.call = call_extract, .a = {b, f, PyBytes_AS_STRING(outp), &p, &rep}};
    int rc = run_cancellable(&j);
    graft_model_close(ob), graft_model_close(of), Py_DECREF(outp);
    PyObject *d = rc ? NULL : j.rc ? raise(j.rc, &j.err) : PyDict_New();
    for (size_t i = 0; d && i < rep.n; i++) {
        PyObject *v = rep.mods[i].rel_error >= 0 ? PyFloat_FromDouble(rep.mods[i].rel_error) : (Py_INCREF(Py_None), Py_None); // None: saved whole
        if (!v || PyDict_SetItemString(d, rep.mods[i].name, v) < 0) Py_CLEAR(d);
        Py_XDECREF(v);
    }
    graft_lora_report_free(&rep);
    return d;
}

static PyMethodDef functions[] = {
    {"open", py_open, METH_O, "open(path) → Model: a Hugging Face folder, a .safetensors or a .gguf file, read-only"},
    {"merge", (PyCFunction)(void (*)(void))py_merge, METH_VARARGS | METH_KEYWORDS,
     "merge(config, out, threads=0, seed=0, force=False): graft merge, with config a YAML string, a path or a dict"},
    {"eval_ppl", (PyCFunction)(void (*)(void))py_eval_ppl, METH_VARARGS | METH_KEYWORDS,
     "eval_ppl(model, texts, ctx=512, stride=0, batch=1, threads=0, bos=None, matmul=\"f32\") → dict: graft eval; texts are strings or token-id lists"},
    {"convert", (PyCFunction)(void (*)(void))py_convert, METH_VARARGS | METH_KEYWORDS,
     "convert(model, out, dtype, threads=0, shard_size=0, force=False): graft convert to F32/F16/BF16/F8 safetensors"},
    {"extract_lora", (PyCFunction)(void (*)(void))py_extract_lora, METH_VARARGS | METH_KEYWORDS,
     "extract_lora(base, model, out, rank=128, threads=0, force=False) → {module: relative error}: graft extract-lora"},
    {NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "graft", "graft: operate on trained neural-network checkpoints (docs/python.md)", -1, functions};

PyMODINIT_FUNC PyInit_graft(void) {
    if (PyType_Ready(&ModelType) < 0 || PyType_Ready(&TensorBufType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Error = PyErr_NewExceptionWithDoc("graft.Error", "a graft failure (exit code 1: I/O, memory, existing output, …)", NULL, NULL);
    UsageError = Error ? PyErr_NewExceptionWithDoc("graft.UsageError", "an invalid argument (the CLI's exit code 2)", Error, NULL) : NULL;
    InputError = Error ? PyErr_NewExceptionWithDoc("graft.InputError", "a bad input file (exit code 3)", Error, NULL) : NULL;
    ConfigError = Error ? PyErr_NewExceptionWithDoc("graft.ConfigError", "a bad merge or recipe config (exit code 4)", Error, NULL) : NULL;
    if (!Error || !UsageError || !InputError || !ConfigError) { Py_DECREF(m); return NULL; }
    Py_INCREF(&ModelType);
    PyModule_AddObject(m, "Model", (PyObject *)&ModelType);
    PyModule_AddObject(m, "Error", Error), Py_INCREF(Error);
    PyModule_AddObject(m, "UsageError", UsageError), Py_INCREF(UsageError);
    PyModule_AddObject(m, "InputError", InputError), Py_INCREF(InputError);
    PyModule_AddObject(m, "ConfigError", ConfigError), Py_INCREF(ConfigError);
    PyModule_AddStringConstant(m, "__version__", graft_version());
    return m;
}
