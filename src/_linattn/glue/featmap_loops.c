/*
 * featmap_loops.c -- gufunc for the elementwise feature maps
 * (kernels/featmap.h):  x (d), scale (), fmap () int64 -> y (d).
 */
#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#define PY_ARRAY_UNIQUE_SYMBOL linattn_ARRAY_API
#define PY_UFUNC_UNIQUE_SYMBOL linattn_UFUNC_API
#include "gufunc_util.h"

#include "kernels/featmap.h"

#define LA_FEATMAP_LOOP(SUF, T)                                                \
    static void featmap_loop_##SUF(char **args, npy_intp const *dims,          \
                                   npy_intp const *steps, void *data)          \
    {                                                                          \
        const npy_intp n = dims[0], d = dims[1];                               \
        npy_intp i, j;                                                         \
        T *tmp;                                                                \
        (void)data;                                                            \
        if (steps[4] == (npy_intp)sizeof(T)) {                                 \
            for (i = 0; i < n; i++) {                                          \
                la_featmap_row_##SUF((int)*(npy_int64 *)(args[2] + i * steps[2]), \
                                     *(double *)(args[1] + i * steps[1]),      \
                                     (const T *)(args[0] + i * steps[0]),      \
                                     LA_ES(steps[4], sizeof(T)), d,            \
                                     (T *)(args[3] + i * steps[3]));           \
            }                                                                  \
            return;                                                            \
        }                                                                      \
        tmp = (T *)la_alloc_work((size_t)(d > 0 ? d : 1) * sizeof(T), 1,       \
                                 "linattn._featmap");                          \
        if (tmp == NULL) {                                                     \
            return;                                                            \
        }                                                                      \
        for (i = 0; i < n; i++) {                                              \
            char *out = args[3] + i * steps[3];                                \
            la_featmap_row_##SUF((int)*(npy_int64 *)(args[2] + i * steps[2]),  \
                                 *(double *)(args[1] + i * steps[1]),          \
                                 (const T *)(args[0] + i * steps[0]),          \
                                 LA_ES(steps[4], sizeof(T)), d, tmp);          \
            for (j = 0; j < d; j++) {                                          \
                *(T *)(out + j * steps[5]) = tmp[j];                           \
            }                                                                  \
        }                                                                      \
        la_free_work((char *)tmp);                                             \
    }

LA_FEATMAP_LOOP(f32, float)
LA_FEATMAP_LOOP(f64, double)

static PyUFuncGenericFunction featmap_funcs[2] = {featmap_loop_f32, featmap_loop_f64};
static void *featmap_data[2] = {NULL, NULL};
static const char featmap_types[] = {
    NPY_FLOAT, NPY_DOUBLE, NPY_INT64, NPY_FLOAT,
    NPY_DOUBLE, NPY_DOUBLE, NPY_INT64, NPY_DOUBLE};

int
la_register_featmap(PyObject *module)
{
    const la_gufunc_desc table[] = {
        {"_featmap", "(d),(),()->(d)", "Elementwise feature map phi(scale * x).",
         3, 1, 2, featmap_funcs, featmap_data, featmap_types},
    };
    return la_add_gufuncs(module, table, 1);
}
