/* fuzz_replay.h - the replay driver of the harnesses' standalone builds
   (FUZZ_RITE_STANDALONE): fz_replay runs every file named on the command
   line, a directory standing for the regular files in it (names starting
   with '.' skipped), each through LLVMFuzzerTestOneInput in a block of its
   exact size, as libFuzzer gives it. Returns non-zero when a file could not
   be read or none was given (a contract violation aborts). */
#ifndef FUZZ_REPLAY_H
#define FUZZ_REPLAY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if !defined(_WIN32)
#include <dirent.h>
#include <sys/stat.h>
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* one file through the harness; non-zero when it cannot be read */
static int fz_replay_file(const char *name, const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL, *exact;
    size_t n = 0, cap = 0, got;
    if (!f) {
        fprintf(stderr, "%s: cannot open %s\n", name, path);
        return 1;
    }
    do {
        if (n == cap) {
            unsigned char *nb;
            cap = cap ? 2 * cap : 4096;
            nb = (unsigned char *)realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return 1;
            }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    fclose(f);
    exact = (unsigned char *)malloc(n ? n : 1);   /* no slack past the input */
    if (exact && n) memcpy(exact, buf, n);
    free(buf);
    if (!exact) return 1;
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

static int fz_replay(const char *name, int argc, char **argv)
{
    int i, bad = 0, count = 0;
    for (i = 1; i < argc; i++) {
#if !defined(_WIN32)
        struct stat sb;
        if (stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode)) {
            DIR *dir = opendir(argv[i]);
            struct dirent *e;
            if (!dir) {
                fprintf(stderr, "%s: cannot open directory %s\n", name, argv[i]);
                bad = 1;
                continue;
            }
            while ((e = readdir(dir)) != NULL) {
                char path[4096];
                if (e->d_name[0] == '.') continue;
                snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
                if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
                bad |= fz_replay_file(name, path);
                count++;
            }
            closedir(dir);
            continue;
        }
#endif
        bad |= fz_replay_file(name, argv[i]);
        count++;
    }
    printf("%s: %d inputs replayed%s\n", name, count, bad ? ", some could not be read" : ", contract held");
    return bad || count == 0;
}

#endif /* FUZZ_REPLAY_H */
