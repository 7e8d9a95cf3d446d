// The `graft` Python module (CPython C API; `make python` builds build/python/graft*.so, linked with
// libgraft.a so that it needs nothing but Python, NumPy and the Debian libraries graft uses):
//   graft.open(path) → Model: .path, .names, .config (dict), len(), `in`, .dtype(name), .shape(name),
//       model[name] → a read-only NumPy array that views the mapped file (no copy; BF16 and the FP8
//       types as their raw uint16 / uint8 bits), model.to_numpy(name, "float32") → a converted copy;
//   graft.merge(config, out, threads=0, seed=0, force=False): config is a MergeKit YAML string, a path
//       to one, or a dict (dumped with PyYAML); model paths are relative to the config file (a string
//       or dict: to the current directory);
//   errors raise graft.Error subclasses (UsageError, InputError, ConfigError for the CLI's exit codes
//       2, 3, 4; Error itself for 1) whose .exit_code and .status carry the class, str() the one line.
// Long calls (merge) release the GIL.
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>
#include "graft/graft.h"

static PyObject *Error, *UsageError, *InputError, *ConfigError;

// Raise the graft.Error subclass of the status's exit code, with the library's one-line message.
static PyObject *raise(int status, const struct graft_err *err) {
    int code = graft_status_exit_code(status);
    PyObject *cls = code == 2 ? UsageError : code == 3 ? InputError : code == 4 ? ConfigError : Error;
    PyObject *exc = PyObject_CallFunction(cls, "s", err && err->msg[0] ? err->msg : graft_status_str(status));
    if (!exc) return NULL;
    PyObject_SetAttrString(exc, "exit_code", PyLong_FromLong(code));
    PyObject_SetAttrString(exc, "status", PyUnicode_FromString(graft_status_name(status)));
    PyErr_SetObject(cls, exc);
    Py_DECREF(exc);
    return NULL;
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
    for (int d = 0; s && d < i->n_dims; d++) PyTuple_SET_ITEM(s, d, PyLong_FromUnsignedLongLong(i->ne[d]));
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
        arr = PyObject_CallMethod(flat, "reshape", "O", shape);
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
        PyList_SET_ITEM(l, (Py_ssize_t)i, PyUnicode_FromStringAndSize(t->name, (Py_ssize_t)t->name_len));
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
    return PyUnicode_FromString(graft_model_path(self->m));
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
static PyObject *model_to_numpy(Model *self, PyObject *args) {
    PyObject *name;
    const char *to = "float32";
    if (!PyArg_ParseTuple(args, "U|s", &name, &to)) return NULL;
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
    Py_BEGIN_ALLOW_THREADS
    graft_row_to_f32(t->info->dtype, graft_model_data(self->m, t), b.buf, (size_t)t->info->n_elem);
    Py_END_ALLOW_THREADS
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
                                      {"to_numpy", (PyCFunction)model_to_numpy, METH_VARARGS,
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

static PyObject *py_open(PyObject *mod, PyObject *arg) {
    (void)mod;
    PyObject *b = NULL;
    if (!PyUnicode_FSConverter(arg, &b)) return NULL;
    struct graft_model *m = NULL;
    struct graft_err err = {0};
    int rc;
    const char *p = PyBytes_AS_STRING(b);
    Py_BEGIN_ALLOW_THREADS
    rc = graft_model_open(p, &m, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(b);
    if (rc) return raise(rc, &err);
    Model *self = PyObject_New(Model, &ModelType);
    if (!self) { graft_model_close(m); return NULL; }
    self->m = m;
    return (PyObject *)self;
}

// ---- merge -------------------------------------------------------------------------------------------

static PyObject *py_merge(PyObject *mod, PyObject *args, PyObject *kw) {
    (void)mod;
    static char *kws[] = {"config", "out", "threads", "seed", "force", NULL};
    PyObject *config, *outp = NULL, *text = NULL;
    int threads = 0, force = 0;
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO&|iKp", kws, &config, PyUnicode_FSConverter, &outp, &threads, &seed, &force)) return NULL;
    const char *path = "graft.merge.yml"; // names a text config; anchors its relative model paths at the cwd
    PyObject *pathb = NULL;
    if (PyDict_Check(config)) { // a dict: the same schema, as YAML
        PyObject *yaml = PyImport_ImportModule("yaml");
        text = yaml ? PyObject_CallMethod(yaml, "safe_dump", "O", config) : NULL;
        Py_XDECREF(yaml);
        if (!text) { Py_DECREF(outp); return NULL; }
    } else if (PyUnicode_Check(config) && !strchr(PyUnicode_AsUTF8(config), '\n') && !strchr(PyUnicode_AsUTF8(config), ':')) {
        if (!PyUnicode_FSConverter(config, &pathb)) { Py_DECREF(outp); return NULL; }
        path = PyBytes_AS_STRING(pathb);
    } else if (PyUnicode_Check(config)) {
        text = config, Py_INCREF(text);
    } else {
        Py_DECREF(outp);
        return PyErr_Format(PyExc_TypeError, "merge: config must be a YAML string, a path or a dict");
    }
    struct graft_merge_options o = graft_merge_default_options();
    o.n_threads = threads > 0 ? threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    o.seed = seed;
    o.writer_flags = force ? GRAFT_WRITER_FORCE : 0;
    o.config_text = text ? PyUnicode_AsUTF8(text) : NULL;
    struct graft_err err = {0};
    int rc;
    const char *out = PyBytes_AS_STRING(outp);
    Py_BEGIN_ALLOW_THREADS
    rc = graft_merge(path, out, &o, &err);
    Py_END_ALLOW_THREADS
    Py_XDECREF(text), Py_XDECREF(pathb), Py_DECREF(outp);
    if (rc) return raise(rc, &err);
    Py_RETURN_NONE;
}

static PyMethodDef functions[] = {
    {"open", py_open, METH_O, "open(path) → Model: a Hugging Face folder, a .safetensors or a .gguf file, read-only"},
    {"merge", (PyCFunction)(void (*)(void))py_merge, METH_VARARGS | METH_KEYWORDS,
     "merge(config, out, threads=0, seed=0, force=False): graft merge, with config a YAML string, a path or a dict"},
    {NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "graft", "graft: operate on trained neural-network checkpoints (docs/python.md)", -1, functions};

PyMODINIT_FUNC PyInit_graft(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m || PyType_Ready(&ModelType) < 0 || PyType_Ready(&TensorBufType) < 0) return NULL;
    Error = PyErr_NewExceptionWithDoc("graft.Error", "a graft failure (exit code 1: I/O, memory, existing output, …)", NULL, NULL);
    UsageError = PyErr_NewExceptionWithDoc("graft.UsageError", "an invalid argument (the CLI's exit code 2)", Error, NULL);
    InputError = PyErr_NewExceptionWithDoc("graft.InputError", "a bad input file (exit code 3)", Error, NULL);
    ConfigError = PyErr_NewExceptionWithDoc("graft.ConfigError", "a bad merge or recipe config (exit code 4)", Error, NULL);
    if (!Error || !UsageError || !InputError || !ConfigError) return NULL;
    Py_INCREF(&ModelType);
    PyModule_AddObject(m, "Model", (PyObject *)&ModelType);
    PyModule_AddObject(m, "Error", Error), Py_INCREF(Error);
    PyModule_AddObject(m, "UsageError", UsageError), Py_INCREF(UsageError);
    PyModule_AddObject(m, "InputError", InputError), Py_INCREF(InputError);
    PyModule_AddObject(m, "ConfigError", ConfigError), Py_INCREF(ConfigError);
    PyModule_AddStringConstant(m, "__version__", graft_version());
    return m;
}
