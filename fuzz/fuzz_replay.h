/* fuzz_replay.h - the replay driver's walk over its arguments, shared by the
   harnesses' standalone builds (FUZZ_RITE_STANDALONE): every file named on
   the command line is run, a directory standing for the regular files in it
   (names starting with '.' skipped). run_file returns non-zero for a file
   it cannot read. Returns non-zero when a file could not be read or none
   was given. */
#ifndef FUZZ_REPLAY_H
#define FUZZ_REPLAY_H

#include <stdio.h>
#if !defined(_WIN32)
#include <dirent.h>
#include <sys/stat.h>
#endif

static int fz_replay(const char *name, int argc, char **argv, int (*run_file)(const char *))
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
                bad |= run_file(path);
                count++;
            }
            closedir(dir);
            continue;
        }
#endif
        bad |= run_file(argv[i]);
        count++;
    }
    printf("%s: %d inputs replayed%s\n", name, count, bad ? ", some could not be read" : ", contract held");
    return bad || count == 0;
}

#endif /* FUZZ_REPLAY_H */
