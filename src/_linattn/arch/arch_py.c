/*
 * arch_py.c -- the arch layer's functions on linattn._core (private; the
 * public face is la.info(), la.tune() and `python -m linattn bench
 * --roofline`):
 *
 *   simd()                 {"active", "cpu", "source", "compiled"}
 *   set_simd(name)         switch the ISA path for this process; returns it
 *   fma_peak(isa=None, dtype="float32", seconds=0.05, reps=5, clock="wall")
 *                          1-core FMA GFLOP/s of a path's loop (GIL released),
 *                          timed by the wall clock or the thread's CPU time
 *   mem_pass(nbytes, seconds=0.02, reps=5, clock="wall")
 *                          best seconds of one in-place pass (read and write)
 *                          over a cached float32 buffer of nbytes: the floor of
 *                          a decoding step over a state of that size
 *   tuning_table()         {isa: {knob: value}}: la_tuning.h's rows
 *   tuning_active()        {knob: value} in force (active row + overrides)
 *   set_tuning(name, v)    override one knob (v < 0: back to the table)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "arch/la_arch.h"
#include "arch/la_tuning.h"
#include "la_cpu.h"

static PyObject *
isa_list(unsigned mask)
{
    PyObject *l = PyList_New(0);
    int i;
    for (i = LA_ISA_COUNT - 1; l != NULL && i >= 0; i--) {
        if ((mask >> i) & 1u) {
            PyObject *s = PyUnicode_FromString(la_isa_name(i));
            if (s == NULL || PyList_Append(l, s) < 0) {
                Py_XDECREF(s);
                Py_DECREF(l);
                return NULL;
            }
            Py_DECREF(s);
        }
    }
    return l;
}

static PyObject *
arch_simd(PyObject *self, PyObject *unused)
{
    PyObject *compiled = isa_list(la_arch_compiled_isas());
    (void)self;
    (void)unused;
    if (compiled == NULL) {
        return NULL;
    }
    return Py_BuildValue("{s:s,s:s,s:s,s:N}", "active", la_isa_name(la_cpu_isa()), "cpu",
                         la_isa_name(la_arch_cpu_isa()), "source", la_cpu_isa_source(),
                         "compiled", compiled);
}

static int
isa_arg(PyObject *arg, int *isa)
{
    const char *name;
    if (arg == NULL || arg == Py_None) {
        *isa = la_cpu_isa();
        return 0;
    }
    name = PyUnicode_AsUTF8(arg);
    if (name == NULL) {
        return -1;
    }
    *isa = la_isa_from_name(name);
    if (*isa < 0 || !((la_arch_compiled_isas() >> *isa) & 1u)) {
        PyErr_Format(PyExc_ValueError,
                     "isa must be one of the paths compiled in (generic, and avx2 / avx512 "
                     "in x86 builds), got %R", arg);
        return -1;
    }
    return 0;
}

static PyObject *
arch_set_simd(PyObject *self, PyObject *arg)
{
    int isa;
    (void)self;
    if (isa_arg(arg, &isa) < 0) {
        return NULL;
    }
    return PyUnicode_FromString(la_isa_name(la_cpu_set_isa(isa)));
}

/* The timing arguments of fma_peak and mem_pass: the clock's name (sets
 * *cpu_clock), seconds per timed run and runs; -1 with ValueError when bad. */
static int
timing_args(const char *clk, double seconds, int reps, int *cpu_clock)
{
    if (strcmp(clk, "wall") != 0 && strcmp(clk, "cpu") != 0) {
        PyErr_Format(PyExc_ValueError, "clock must be 'wall' or 'cpu', got '%s'", clk);
        return -1;
    }
    if (!(seconds > 0 && seconds <= 10) || reps < 1 || reps > 1000) {
        PyObject *so = PyFloat_FromDouble(seconds);
        if (so != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "seconds must be in (0, 10] and reps in [1, 1000], got %R and %d",
                         so, reps);
            Py_DECREF(so);
        }
        return -1;
    }
    *cpu_clock = strcmp(clk, "cpu") == 0;
    return 0;
}

static PyObject *
arch_fma_peak(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"isa", "dtype", "seconds", "reps", "clock", NULL};
    PyObject *isao = Py_None;
    const char *dtype = "float32", *clk = "wall";
    double seconds = 0.05, r;
    int reps = 5, isa, f64, cpu_clock;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|Osdis:fma_peak", kwlist, &isao, &dtype,
                                     &seconds, &reps, &clk)) {
        return NULL;
    }
    if (timing_args(clk, seconds, reps, &cpu_clock) < 0) {
        return NULL;
    }
    if (isa_arg(isao, &isa) < 0) {
        return NULL;
    }
    if (strcmp(dtype, "float32") != 0 && strcmp(dtype, "float64") != 0) {
        PyErr_Format(PyExc_ValueError, "dtype must be 'float32' or 'float64', got '%s'",
                     dtype);
        return NULL;
    }
    f64 = strcmp(dtype, "float64") == 0;
    Py_BEGIN_ALLOW_THREADS
    r = la_fma_peak(isa, f64, seconds, reps, cpu_clock);
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(r);
}

static PyObject *
arch_mem_pass(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"nbytes", "seconds", "reps", "clock", NULL};
    const char *clk = "wall";
    long long nbytes;
    double seconds = 0.02, r;
    int reps = 5, cpu_clock;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "L|dis:mem_pass", kwlist, &nbytes, &seconds,
                                     &reps, &clk)) {
        return NULL;
    }
    if (timing_args(clk, seconds, reps, &cpu_clock) < 0) {
        return NULL;
    }
    if (nbytes < 4 || nbytes > ((long long)1 << 34)) {
        PyErr_Format(PyExc_ValueError, "nbytes must be in [4, 2**34], got %lld", nbytes);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    r = la_mem_pass((size_t)nbytes, seconds, reps, cpu_clock);
    Py_END_ALLOW_THREADS
    if (r < 0) {
        return PyErr_NoMemory();
    }
    return PyFloat_FromDouble(r);
}

static PyObject *
tuning_dict(const la_tuning *t)
{
    PyObject *d = PyDict_New();
    const la_index *f = (const la_index *)t;
    int i;
    for (i = 0; d != NULL && la_tuning_names[i] != NULL; i++) {
        PyObject *v = PyLong_FromLongLong((long long)f[i]);
        if (v == NULL || PyDict_SetItemString(d, la_tuning_names[i], v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

static PyObject *
arch_tuning_table(PyObject *self, PyObject *unused)
{
    PyObject *d = PyDict_New();
    int i;
    (void)self;
    (void)unused;
    for (i = 0; d != NULL && i < LA_ISA_COUNT; i++) {
        PyObject *row = tuning_dict(la_tuning_defaults(i));
        if (row == NULL || PyDict_SetItemString(d, la_isa_name(i), row) < 0) {
            Py_XDECREF(row);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(row);
    }
    return d;
}

static PyObject *
arch_tuning_active(PyObject *self, PyObject *unused)
{
    const la_tuning t = la_tuning_active();
    (void)self;
    (void)unused;
    return tuning_dict(&t);
}

static PyObject *
arch_set_tuning(PyObject *self, PyObject *args)
{
    const char *name;
    long long value;
    (void)self;
    if (!PyArg_ParseTuple(args, "sL:set_tuning", &name, &value)) {
        return NULL;
    }
    if (!la_tuning_set(name, (la_index)value)) {
        PyErr_Format(PyExc_ValueError, "name must be a knob of the tuning table, got '%s'",
                     name);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef arch_methods[] = {
    {"simd", arch_simd, METH_NOARGS, "Active ISA path, the CPU's best, where it came from."},
    {"set_simd", arch_set_simd, METH_O, "Switch the ISA path for this process."},
    {"fma_peak", (PyCFunction)(void (*)(void))arch_fma_peak, METH_VARARGS | METH_KEYWORDS,
     "1-core FMA GFLOP/s of an ISA path's throughput loop."},
    {"mem_pass", (PyCFunction)(void (*)(void))arch_mem_pass, METH_VARARGS | METH_KEYWORDS,
     "Best seconds of one in-place float32 pass over a cached buffer of nbytes."},
    {"tuning_table", arch_tuning_table, METH_NOARGS, "Tuning defaults per ISA path."},
    {"tuning_active", arch_tuning_active, METH_NOARGS, "Tuning knobs in force."},
    {"set_tuning", arch_set_tuning, METH_VARARGS, "Override one tuning knob (< 0: unset)."},
    {NULL, NULL, 0, NULL}};

int
la_register_arch(PyObject *m)
{
    return PyModule_AddFunctions(m, arch_methods);
}
