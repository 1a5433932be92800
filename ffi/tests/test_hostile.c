/* Hostile inputs never take the host down (issue 12): each case runs in a forked child under
 * an address-space limit (RLIMIT_AS, as `ulimit -v` sets it) and must come back with an error
 * status; an abort, a signal or a success is a failure. The cases: session files with a valid
 * checksum and a huge, wrapping or nonsensical cache or sampler, a device as a session file,
 * a model whose block_count is 2^31, a pinned system prompt far larger than the memory
 * budget allows, and chat templates that loop for ever or double a string 40 times. The
 * limit is the board's memory budget, as `tern_model_memory_budget` reports it. */
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

/* Address space each child may use: the board's memory budget (set in main). */
static rlim_t child_limit;

/* ---- SHA-256 (FIPS 180-4), to seal forged session files with a valid checksum ---- */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const unsigned char *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) +
                      K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

static void sha256(const unsigned char *data, size_t len, unsigned char out[32]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    size_t i = 0;
    for (; i + 64 <= len; i += 64) sha256_block(h, data + i);
    unsigned char tail[128] = {0};
    size_t rest = len - i;
    memcpy(tail, data + i, rest);
    tail[rest] = 0x80;
    size_t n = rest + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int b = 0; b < 8; b++) tail[n - 1 - b] = (unsigned char)(bits >> (8 * b));
    sha256_block(h, tail);
    if (n == 128) sha256_block(h, tail + 64);
    for (int j = 0; j < 8; j++)
        for (int b = 0; b < 4; b++) out[4 * j + b] = (unsigned char)(h[j] >> (24 - 8 * b));
}

/* ---- files ---- */

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int write_all(const char *path, const unsigned char *b, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t w = fwrite(b, 1, len, f);
    return fclose(f) == 0 && w == len;
}

/* Session file layout: "TERNSESS", version u32, payload length u64, payload, SHA-256 of the
 * payload. Payload offsets: the model fingerprint (32 bytes), the cache's sinks, window and
 * evict chunk (u64), its KV type (u8), the temperature (f32). */
#define HEADER 20
#define AT_SINKS 32
#define AT_WINDOW 40
#define AT_TEMPERATURE 57

/* Copies session file `from` to `to` with `n` bytes at payload offset `at` replaced, sealed
 * with a valid checksum. */
static int forge(const char *from, const char *to, size_t at, const void *value, size_t n) {
    size_t len = 0;
    unsigned char *b = read_all(from, &len);
    if (!b || len < HEADER + 32 + at + n) return 0;
    memcpy(b + HEADER + at, value, n);
    sha256(b + HEADER, len - HEADER - 32, b + len - 32);
    int ok = write_all(to, b, len);
    free(b);
    return ok;
}

/* Copies the model with the u32 value of metadata key `key` replaced by `value`. */
static int patch_u32_key(const char *from, const char *to, const char *key, uint32_t value) {
    size_t len = 0;
    unsigned char *b = read_all(from, &len);
    if (!b) return 0;
    size_t klen = strlen(key);
    int done = 0;
    for (size_t i = 8; i + klen + 8 <= len && i < (1u << 20) && !done; i++) {
        /* The key, preceded by its u64 length and followed by the type 4 (u32). */
        if (memcmp(b + i, key, klen) == 0 && b[i - 8] == klen && b[i + klen] == 4) {
            for (int k = 0; k < 4; k++) b[i + klen + 4 + k] = (unsigned char)(value >> (8 * k));
            done = 1;
        }
    }
    int ok = done && write_all(to, b, len);
    free(b);
    return ok;
}

/* Copies the model with the string value of metadata key `key` replaced by `value`, padded
 * with spaces to the original's length (so that no offset in the file moves). */
static int patch_str_key(const char *from, const char *to, const char *key, const char *value) {
    size_t len = 0;
    unsigned char *b = read_all(from, &len);
    if (!b) return 0;
    size_t klen = strlen(key), vlen = strlen(value);
    int done = 0;
    for (size_t i = 8; i + klen + 12 <= len && i < (8u << 20) && !done; i++) {
        /* The key, preceded by its u64 length, followed by the type 8 (string) and the
         * string's u64 length. */
        if (memcmp(b + i, key, klen) == 0 && b[i - 8] == klen && b[i + klen] == 8) {
            uint64_t n = 0;
            for (int k = 0; k < 8; k++) n |= (uint64_t)b[i + klen + 4 + k] << (8 * k);
            unsigned char *text = b + i + klen + 12;
            if (n < vlen || text + n > b + len) break;
            memset(text, ' ', n);
            memcpy(text, value, vlen);
            done = 1;
        }
    }
    int ok = done && write_all(to, b, len);
    free(b);
    return ok;
}

/* ---- the cases, each run in a child ---- */

static const char *model_path;
static const char *case_arg;
/* The board profile the cases run as; the children's limit is its memory budget. */
static const char *board;

/* The model at `path`, loaded as `board` with 2 threads. */
static TernModel *load_on_board(const char *path) {
    TernModelParams *mp = NULL;
    TernModel *m = NULL;
    if (tern_model_params_new(&mp) != TERN_OK) return NULL;
    tern_model_params_set_threads(mp, 2);
    tern_model_params_set_board(mp, board);
    if (tern_model_load(path, mp, &m) != TERN_OK)
        fprintf(stderr, "loading %s failed: %s\n", path, tern_last_error());
    tern_model_params_free(mp);
    return m;
}

/* 0 when restoring `case_arg` fails with a session-file or memory error. */
static int restore_fails(void) {
    TernModel *m = load_on_board(model_path);
    if (!m) return 3;
    TernSession *s = NULL;
    TernStatus st = tern_session_restore(m, case_arg, &s);
    printf("    %s: %s\n", tern_status_name(st), tern_last_error());
    return (st == TERN_ERR_SESSION_FILE || st == TERN_ERR_OUT_OF_MEMORY) && s == NULL ? 0 : 1;
}

/* 0 when loading the model at `case_arg` fails with TERN_ERR_MODEL. */
static int load_fails(void) {
    TernModelParams *mp = NULL;
    TernModel *m = NULL;
    if (tern_model_params_new(&mp) != TERN_OK) return 3;
    tern_model_params_set_board(mp, board);
    TernStatus st = tern_model_load(case_arg, mp, &m);
    printf("    %s: %s\n", tern_status_name(st), tern_last_error());
    return st == TERN_ERR_MODEL && m == NULL ? 0 : 1;
}

/* 0 when a session with a pinned system prompt far larger than the budget allows and a
 * window of 64 is refused. The prompt is sized from the budget: this text is about 2.7 bytes
 * per SmolLM2 token, and a token's f16 keys and values take 23 040 bytes, so budget / 4 096
 * bytes of it ask for about twice the budget (`child_limit`; at least 2 MiB of text). A
 * fixed size would fit a large machine's budget and prefill for hours. */
static int huge_pinned_system_fails(void) {
    TernModel *m = load_on_board(model_path);
    if (!m) return 3;
    size_t n = child_limit / 4096 > (2u << 20) ? (size_t)(child_limit / 4096) : (2u << 20);
    char *text = malloc(n + 1);
    if (!text) return 3;
    for (size_t i = 0; i < n; i++) text[i] = "lorem ipsum dolor sit amet "[i % 27];
    text[n] = 0;
    TernSessionParams *sp = small_params(8);
    tern_session_params_set_window(sp, 64);
    tern_session_params_set_system_prompt(sp, text);
    tern_session_params_set_pin_system(sp, true);
    TernSession *s = NULL;
    TernStatus st = tern_session_new(m, sp, &s);
    printf("    %s: %s\n", tern_status_name(st), tern_last_error());
    return st == TERN_ERR_OUT_OF_MEMORY && s == NULL ? 0 : 1;
}

/* 0 when a user message through the chat template of the model at `case_arg` fails with
 * TERN_ERR_RUNTIME (the template's error) rather than taking the process down. */
static int template_fails(void) {
    TernModel *m = load_on_board(case_arg);
    if (!m) return 3;
    TernSessionParams *sp = small_params(8);
    TernSession *s = NULL;
    if (tern_session_new(m, sp, &s) != TERN_OK) return 3;
    TernStatus st = tern_session_add_message(s, "user", "hi");
    printf("    %s: %s\n", tern_status_name(st), tern_last_error());
    return st == TERN_ERR_RUNTIME ? 0 : 1;
}

/* Runs `fn` in a child under `child_limit`; the child must exit 0. */
static void in_child(const char *what, int (*fn)(void), const char *arg) {
    printf("%s\n", what);
    fflush(stdout);
    case_arg = arg;
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit r = {child_limit, child_limit};
        if (setrlimit(RLIMIT_AS, &r) != 0) _exit(4);
        int code = fn();
        fflush(stdout);
        _exit(code);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "%s: the child was killed by signal %d\n", what, WTERMSIG(status));
        CHECK(!WIFSIGNALED(status));
    } else {
        if (WEXITSTATUS(status) != 0)
            fprintf(stderr, "%s: the child exited with %d\n", what, WEXITSTATUS(status));
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
}

/* Runs every case as board `name`, in the fresh directory `dir`. */
static void run_cases(const char *name, const char *dir) {
    board = name;
    char good[300], path[300];
    snprintf(good, sizeof good, "%s/good.tern", dir);

    /* A real session file to forge from. */
    TernModel *m = load_on_board(model_path);
    CHECK(m != NULL);
    if (!m) return;
    uint64_t budget = 0;
    CHECK_OK(tern_model_memory_budget(m, &budget));
    child_limit = (rlim_t)budget;
    printf("== board %s: each case runs under RLIMIT_AS = its memory budget, %llu MiB\n", name,
           (unsigned long long)(budget >> 20));
    TernSessionParams *sp = small_params(8);
    TernSession *s = NULL;
    CHECK_OK(tern_session_new(m, sp, &s));
    CHECK_OK(tern_session_feed_text(s, "Hello there.", NULL));
    CHECK_OK(tern_session_save(s, good));
    tern_session_free(s);
    tern_session_params_free(sp);
    tern_model_free(m);

    const struct {
        const char *what;
        size_t at;
        uint64_t value;
        size_t n;
    } forged[] = {
        {"session: window 2^26", AT_WINDOW, 1ull << 26, 8},
        {"session: window 2^40", AT_WINDOW, 1ull << 40, 8},
        {"session: window 2^50", AT_WINDOW, 1ull << 50, 8},
        {"session: sinks 2^30", AT_SINKS, 1ull << 30, 8},
        {"session: window 2^64-54 (wraps)", AT_WINDOW, UINT64_MAX - 53, 8},
    };
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
        snprintf(path, sizeof path, "%s/forged%zu.tern", dir, i);
        CHECK(forge(good, path, forged[i].at, &forged[i].value, forged[i].n));
        in_child(forged[i].what, restore_fails, path);
    }
    float nan = 0.0f / 0.0f;
    snprintf(path, sizeof path, "%s/nan.tern", dir);
    CHECK(forge(good, path, AT_TEMPERATURE, &nan, 4));
    in_child("session: NaN temperature", restore_fails, path);
    in_child("session: /dev/zero", restore_fails, "/dev/zero");

    snprintf(path, sizeof path, "%s/blocks.gguf", dir);
    CHECK(patch_u32_key(model_path, path, "llama.block_count", 1u << 31));
    in_child("model: block_count 2^31", load_fails, path);
    remove(path);

    in_child("session: a pinned system prompt of twice the budget, window 64", huge_pinned_system_fails,
             NULL);

    const struct {
        const char *what;
        const char *template;
    } templates[] = {
        {"template: a string doubled 40 times",
         "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
         "{% endfor %}{{ ns.s|length }}"},
        {"template: a macro's output doubled 40 times",
         "{% set ns = namespace(s='ab') %}{% macro d(x) %}{{ x }}{{ x }}{% endmacro %}"
         "{% for i in range(40) %}{% set ns.s = d(ns.s) %}{% endfor %}{{ ns.s|length }}"},
        {"template: two nested range(100000) loops",
         "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"},
    };
    for (size_t i = 0; i < sizeof templates / sizeof templates[0]; i++) {
        snprintf(path, sizeof path, "%s/template%zu.gguf", dir, i);
        CHECK(patch_str_key(model_path, path, "tokenizer.chat_template", templates[i].template));
        in_child(templates[i].what, template_fails, path);
        remove(path);
    }

    for (int i = 0; i < 8; i++) {
        snprintf(path, sizeof path, "%s/forged%d.tern", dir, i);
        remove(path);
    }
    snprintf(path, sizeof path, "%s/nan.tern", dir);
    remove(path);
    remove(good);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    model_path = argv[1];

    /* The checksum routine against the FIPS 180-2 example "abc". */
    unsigned char d[32];
    sha256((const unsigned char *)"abc", 3, d);
    CHECK(d[0] == 0xba && d[1] == 0x78 && d[30] == 0x15 && d[31] == 0xad);

    /* The budget accessor's argument checks. */
    uint64_t budget = 0;
    CHECK(tern_model_memory_budget(NULL, &budget) == TERN_ERR_NULL_POINTER);
    TernModel *m = load_model(model_path, 2);
    CHECK(m != NULL);
    CHECK(tern_model_memory_budget(m, NULL) == TERN_ERR_NULL_POINTER);
    tern_model_free(m);

    char dir[] = "/tmp/tern-ffi-hostile-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    /* This machine's board, and the smallest profile (a Raspberry Pi Zero 2 W, 358 MiB). */
    run_cases("auto", dir);
    run_cases("rpi-zero2w", dir);
    rmdir(dir);
    return finish("test_hostile");
}
