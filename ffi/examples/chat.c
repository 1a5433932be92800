/* chat.c — ask a model one question and stream the reply.
 *
 *   cc chat.c -I ffi/include -L target/release -ltern -o chat
 *   ./chat ~/.cache/tern/models/SmolLM2-135M-Instruct.Q4_1.gguf "Why is the sky blue?" 64
 */
#include <stdio.h>
#include <stdlib.h>

#include "tern.h"

/* Prints the failed call's message and leaves. */
static void check(TernStatus status, const char *what) {
    if (status != TERN_OK) {
        fprintf(stderr, "%s failed (%s): %s\n", what, tern_status_name(status),
                tern_last_error());
        exit(1);
    }
}

/* Receives the reply piece by piece; each piece is whole UTF-8. */
static bool print_piece(const char *piece, size_t len, void *user_data) {
    (void)user_data;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return true; /* false would stop the reply here */
}

static void print_log(TernLogLevel level, const char *message, void *user_data) {
    (void)user_data;
    fprintf(stderr, "[tern %d] %s\n", level, message);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf PROMPT [MAX_TOKENS]\n", argv[0]);
        return 2;
    }
    if (tern_abi_version() != TERN_ABI_VERSION) {
        fprintf(stderr, "libtern %s has ABI %u, this program was built for %u\n",
                tern_version(), tern_abi_version(), TERN_ABI_VERSION);
        return 1;
    }
    check(tern_set_log_callback(print_log, NULL, TERN_LOG_WARN), "tern_set_log_callback");

    /* The model: memory-mapped, shared by every session made from it. */
    TernModelParams *model_params = NULL;
    check(tern_model_params_new(&model_params), "tern_model_params_new");
    check(tern_model_params_set_threads(model_params, 0), "set_threads"); /* 0: all cores */
    TernModel *model = NULL;
    check(tern_model_load(argv[1], model_params, &model), "tern_model_load");
    tern_model_params_free(model_params);

    /* A session: one conversation, with its own cache and sampler. */
    TernSessionParams *params = NULL;
    check(tern_session_params_new(&params), "tern_session_params_new");
    check(tern_session_params_set_system_prompt(params, "You are a concise assistant."),
          "set_system_prompt");
    check(tern_session_params_set_temperature(params, 0.7f), "set_temperature");
    check(tern_session_params_set_seed(params, 42), "set_seed");
    check(tern_session_params_set_max_tokens(params, argc > 3 ? (uint32_t)atoi(argv[3]) : 128),
          "set_max_tokens");
    TernSession *session = NULL;
    check(tern_session_new(model, params, &session), "tern_session_new");
    tern_session_params_free(params);

    /* Ask, and stream the answer. Another thread may call tern_session_cancel(session). */
    TernStopReason stop;
    TernStatus status = tern_session_chat(session, argv[2], print_piece, NULL, &stop);
    printf("\n");
    if (status != TERN_CANCELLED) check(status, "tern_session_chat");

    TernStats stats = {.size = sizeof stats};
    check(tern_session_stats(session, &stats), "tern_session_stats");
    fprintf(stderr, "%llu tokens generated at %.1f tokens/s (stop reason %d)\n",
            (unsigned long long)stats.generated_tokens, stats.generation_tokens_per_second,
            (int)stop);

    tern_session_free(session);
    tern_model_free(model);
    return 0;
}
