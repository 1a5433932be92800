/* long_chat.c — a long scripted conversation through the C ABI: TURNS turns (200 by
 * default), each a passage of text read from a file and a question, replies of at most
 * REPLY tokens, in one session with the board's default cache. Every call must succeed; at
 * the end it prints the tokens fed, the cache in use and the resident memory, and fails
 * unless the conversation passed MIN_TOKENS tokens (30 000 by default).
 *
 *   cargo build --release -p tern-ffi
 *   cc ffi/examples/long_chat.c -I ffi/include -L target/release -ltern \
 *      -Wl,-rpath,$PWD/target/release -o long_chat
 *   ./long_chat MODEL.gguf TEXT.txt [TURNS] [REPLY] [MIN_TOKENS]
 *
 * `cargo run --release -p tern-benches --bin gemma-chat` builds and runs it on Gemma 3.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern.h"

static void check(TernStatus status, const char *what, int turn) {
    if (status != TERN_OK) {
        fprintf(stderr, "turn %d: %s failed (%s): %s\n", turn, what, tern_status_name(status),
                tern_last_error());
        exit(1);
    }
}

static bool count_piece(const char *piece, size_t len, void *user_data) {
    (void)piece;
    *(size_t *)user_data += len;
    return true;
}

/* Resident memory of this process in KiB, from /proc/self/status (0 if unknown). */
static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kib = atol(line + 6);
    if (f) fclose(f);
    return kib;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf TEXT.txt [TURNS] [REPLY] [MIN_TOKENS]\n", argv[0]);
        return 2;
    }
    int turns = argc > 3 ? atoi(argv[3]) : 200;
    uint32_t reply = argc > 4 ? (uint32_t)atoi(argv[4]) : 40;
    unsigned long long min_tokens = argc > 5 ? strtoull(argv[5], NULL, 10) : 30000;
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        perror(argv[2]);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) return 1;
    text[size] = 0;
    fclose(f);

    TernModelParams *mp = NULL;
    check(tern_model_params_new(&mp), "tern_model_params_new", 0);
    TernModel *model = NULL;
    check(tern_model_load(argv[1], mp, &model), "tern_model_load", 0);
    tern_model_params_free(mp);
    TernSessionParams *sp = NULL;
    check(tern_session_params_new(&sp), "tern_session_params_new", 0);
    check(tern_session_params_set_seed(sp, 7), "set_seed", 0);
    check(tern_session_params_set_max_tokens(sp, reply), "set_max_tokens", 0);
    TernSession *session = NULL;
    check(tern_session_new(model, sp, &session), "tern_session_new", 0);
    tern_session_params_free(sp);

    /* Each message: the next 600 bytes of the text (cut at a space) and a question. */
    const size_t PASSAGE = 600;
    size_t at = 0;
    long rss_first = 0, rss_max = 0;
    TernStats st = {.size = sizeof st};
    for (int t = 1; t <= turns; t++) {
        if (at + PASSAGE >= (size_t)size) at = 0;
        size_t end = at + PASSAGE;
        while (end < (size_t)size && text[end] != ' ') end++;
        char message[1024];
        snprintf(message, sizeof message, "Here is a passage:\n%.*s\nWhat happens in it?",
                 (int)(end - at), text + at);
        at = end + 1;
        size_t bytes = 0;
        TernStopReason stop;
        check(tern_session_chat(session, message, count_piece, &bytes, &stop),
              "tern_session_chat", t);
        check(tern_session_stats(session, &st), "tern_session_stats", t);
        long rss = rss_kib();
        if (t == 10) rss_first = rss;
        if (t > 10 && rss > rss_max) rss_max = rss;
        if (t % 20 == 0)
            fprintf(stderr, "turn %d: %llu tokens, cache %llu/%llu, RSS %ld KiB\n", t,
                    (unsigned long long)st.tokens, (unsigned long long)st.cache_used,
                    (unsigned long long)st.cache_capacity, rss);
    }
    printf("C ABI: %d turns, %llu tokens (%llu generated), cache %llu/%llu, RSS after turn 10 "
           "%ld KiB, at most %ld KiB after\n",
           turns, (unsigned long long)st.tokens, (unsigned long long)st.generated_tokens,
           (unsigned long long)st.cache_used, (unsigned long long)st.cache_capacity, rss_first,
           rss_max);
    tern_session_free(session);
    tern_model_free(model);
    free(text);
    if (st.tokens < min_tokens) {
        fprintf(stderr, "only %llu tokens, fewer than %llu\n", (unsigned long long)st.tokens,
                min_tokens);
        return 1;
    }
    return 0;
}
