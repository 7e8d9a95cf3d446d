// Order statistics of float arrays (exact, O(n) on average).
#include <stdlib.h>
#include "impl.h"

static int cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

float graft__kth_smallest(float *v, size_t n, size_t k) {
    size_t lo = 0, hi = n - 1;
    for (int rounds = 0; lo < hi; rounds++) {
        if (rounds > 64) { qsort(v + lo, hi - lo + 1, sizeof *v, cmp_f); return v[k]; }
        size_t mid = lo + (hi - lo) / 2;
        float a = v[lo], b = v[mid], cc = v[hi], p = a < b ? (b < cc ? b : a < cc ? cc : a) : (a < cc ? a : b < cc ? cc : b);
        size_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < p) i++;
            while (p < v[j]) j--;
            if (i <= j) {
                float tmp = v[i];
                v[i] = v[j], v[j] = tmp, i++;
                if (j == 0) break;
                j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return v[k];
    }
    return v[k];
}

