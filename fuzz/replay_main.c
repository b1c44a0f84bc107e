/*
 * replay_main.c: runs a fuzz target's LLVMFuzzerTestOneInput over files,
 * for builds without libFuzzer (any compiler), so corpora replay as tests.
 *
 *   fuzz_<name> <file or directory>...
 *
 * Exits non-zero if no input was found at all: an empty or mistyped corpus
 * path must not pass silently.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  uint8_t *buf = NULL;
  size_t len = 0, cap = 0, n;

  if (!f) {
    perror(path);
    return -1;
  }
  for (;;) {
    if (len == cap) {
      uint8_t *p;
      cap = cap ? cap * 2 : 4096;
      p = realloc(buf, cap);
      if (!p) {
        free(buf);
        fclose(f);
        return -1;
      }
      buf = p;
    }
    n = fread(buf + len, 1, cap - len, f);
    if (n == 0) {
      break;
    }
    len += n;
  }
  if (ferror(f)) {
    perror(path);
    free(buf);
    fclose(f);
    return -1;
  }
  fclose(f);
  /* An exact-size copy lets ASan catch a read one past the input. */
  {
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) {
      free(buf);
      return -1;
    }
    if (len) {
      memcpy(exact, buf, len);
    }
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
  }
  return 0;
}

/* Runs every regular file directly inside `dir`; returns files run or -1. */
static long run_dir(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *de;
  long count = 0;

  if (!d) {
    perror(dir);
    return -1;
  }
  while ((de = readdir(d)) != NULL) {
    char path[4096];
    struct stat st;

    if (de->d_name[0] == '.') {
      continue;
    }
    if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >=
        (int)sizeof(path)) {
      continue;
    }
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
      continue;
    }
    if (run_file(path) != 0) {
      closedir(d);
      return -1;
    }
    ++count;
  }
  closedir(d);
  return count;
}

int main(int argc, char **argv) {
  long total = 0;
  int i;

  for (i = 1; i < argc; ++i) {
    struct stat st;
    long n;

    if (stat(argv[i], &st) != 0) {
      perror(argv[i]);
      return 1;
    }
    if (S_ISDIR(st.st_mode)) {
      n = run_dir(argv[i]);
    } else {
      n = run_file(argv[i]) == 0 ? 1 : -1;
    }
    if (n < 0) {
      return 1;
    }
    total += n;
  }
  if (total == 0) {
    fprintf(stderr, "no inputs found\n");
    return 1;
  }
  printf("replayed %ld inputs\n", total);
  return 0;
}
