// Replay a corrupt file: gen-corrupt CLASS SEED OUT  (or `gen-corrupt --list`, `gen-corrupt valid SEED OUT`).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "corrupt.h"

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "--list")) {
        for (int i = 0; i < corrupt_n_classes(); i++) printf("%s %s %d %s\n", corrupt_class(i)->name, corrupt_class(i)->ref,
                                                               corrupt_class(i)->status, corrupt_class(i)->msg);
        return 0;
    }
    if (argc != 4) { fprintf(stderr, "usage: gen-corrupt CLASS|valid SEED OUT | --list\n"); return 2; }
    size_t len;
    uint32_t seed = (uint32_t)strtoul(argv[2], NULL, 10);
    uint8_t *b;
    if (!strcmp(argv[1], "valid")) b = corrupt_make_valid(seed, &len);
    else {
        int c = corrupt_find(argv[1]);
        if (c < 0) { fprintf(stderr, "unknown class %s\n", argv[1]); return 2; }
        b = corrupt_make(c, seed, &len, NULL, 0);
    }
    FILE *f = fopen(argv[3], "wb");
    if (!f || (len && fwrite(b, 1, len, f) != len) || fclose(f)) { perror(argv[3]); return 1; }
    free(b);
    return 0;
}
