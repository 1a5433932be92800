/* A streamed generation: versions, the log callback, a reply handed out piece by piece as
 * whole UTF-8, a callback that stops the reply, and the counters. */
#include "common.h"

typedef struct {
    int lines, info_lines, loaded_lines, reply_lines, shrunk_lines;
} LogSeen;

static void on_log(TernLogLevel level, const char *message, void *user_data) {
    LogSeen *seen = (LogSeen *)user_data;
    seen->lines++;
    if (level == TERN_LOG_INFO) seen->info_lines++;
    if (strstr(message, "loaded ")) seen->loaded_lines++;
    if (strstr(message, "reply of ")) seen->reply_lines++;
    if (level == TERN_LOG_WARN && strstr(message, "KV window shrunk from 8000"))
        seen->shrunk_lines++;
}

/* Counts the characters of s that take more than one byte. */
static int multibyte_chars(const char *s) {
    int n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) == 0xC0) n++;
    return n;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }

    /* Versions. */
    CHECK(tern_abi_version() == TERN_ABI_VERSION);
    CHECK(strlen(tern_version()) >= 5 && strchr(tern_version(), '.') != NULL);
    CHECK(strcmp(tern_last_error(), "") == 0);

    LogSeen seen = {0};
    CHECK_OK(tern_set_log_callback(on_log, &seen, TERN_LOG_INFO));

    TernModel *model = load_model(argv[1], 2);
    CHECK(model != NULL);
    if (!model) return finish("test_stream");
    CHECK(seen.loaded_lines == 1);

    TernSessionParams *sp = small_params(32);
    TernSession *s = NULL;
    CHECK_OK(tern_session_new(model, sp, &s));
    CHECK_OK(tern_session_params_free(sp));

    TernStats before = stats_of(s);
    CHECK(before.size == sizeof(TernStats));
    CHECK(before.tokens == 0 && before.cache_used == 0);
    CHECK(before.cache_capacity == 4 + 252);

    /* Japanese text: each character is 3 bytes, and the tokenizer splits some of them over
     * several tokens, so pieces must hold bytes back until a character is whole. */
    Collector c = {0};
    TernStopReason stop = TERN_STOP_CANCELLED;
    CHECK_OK(tern_session_chat(s, "How do you say thank you in Japanese?", collect, &c, &stop));
    printf("reply (%d pieces, stop %d): %s\n", c.pieces, (int)stop, c.text);
    CHECK(c.pieces > 1);
    CHECK(c.bad_pieces == 0);
    CHECK(utf8_valid(c.text, c.len));
    CHECK(multibyte_chars(c.text) > 0);
    CHECK(stop == TERN_STOP_END_OF_TURN || stop == TERN_STOP_MAX_TOKENS);
    CHECK(seen.reply_lines == 1);

    TernStats st = stats_of(s);
    CHECK(st.generated_tokens > 0 && st.generated_tokens <= 32);
    CHECK(st.prompt_tokens > 5);
    /* Every token fed is either prompt or reply; the reply's tokens all enter the cache. */
    CHECK(st.tokens == st.prompt_tokens + st.generated_tokens);
    CHECK(st.cache_used == st.tokens); /* nothing evicted yet */
    CHECK(st.generation_tokens_per_second > 0 && st.prompt_tokens_per_second > 0);
    CHECK(st.generated_seconds > 0 && st.prompt_seconds > 0);

    /* The callback asks to stop at its third piece: the reply ends there (one last piece may
     * still bring text held back while looking for stop strings). */
    Collector c2 = {0};
    c2.stop_after = 3;
    stop = TERN_STOP_END_OF_TURN;
    CHECK_OK(tern_session_chat(s, "Tell me a long story about a fox.", collect, &c2, &stop));
    CHECK(stop == TERN_STOP_CALLBACK);
    CHECK(c2.pieces >= 3 && c2.pieces <= 4);
    CHECK(c2.bad_pieces == 0);
    TernStats st2 = stats_of(s);
    CHECK(st2.generated_tokens - st.generated_tokens < 32);

    /* A NULL callback generates without streaming; the reply still joins the conversation. */
    TernStats st3_before = stats_of(s);
    CHECK_OK(tern_session_chat(s, "Thanks!", NULL, NULL, NULL));
    TernStats st3 = stats_of(s);
    CHECK(st3.generated_tokens > st3_before.generated_tokens);

    /* Reset forgets everything; the session works on. */
    CHECK_OK(tern_session_reset(s));
    TernStats st4 = stats_of(s);
    CHECK(st4.tokens == 0 && st4.cache_used == 0 && st4.generated_tokens == 0);
    Collector c3 = {0};
    CHECK_OK(tern_session_chat(s, "How do you say thank you in Japanese?", collect, &c3, NULL));
    /* Greedy decoding: after a reset, the same question gets the same answer. */
    CHECK(strcmp(c3.text, c.text) == 0);

    /* Below the minimum level, lines are not produced; NULL removes the callback. */
    int lines = seen.lines;
    CHECK_OK(tern_set_log_callback(on_log, &seen, TERN_LOG_ERROR));
    CHECK_OK(tern_session_reset(s));
    CHECK_OK(tern_session_chat(s, "Hi", NULL, NULL, NULL));
    CHECK(seen.lines == lines);

    /* A board's memory budget: on a Raspberry Pi Zero 2 W (358 MiB for Tern), a window of
     * 8000 f32 tokens (46 KB each for this model) does not fit next to the weights, so it
     * shrinks, with a warning. */
    CHECK_OK(tern_set_log_callback(on_log, &seen, TERN_LOG_WARN));
    TernModelParams *mp = NULL;
    CHECK_OK(tern_model_params_new(&mp));
    CHECK_OK(tern_model_params_set_board(mp, "rpi-zero2w"));
    CHECK_OK(tern_model_params_set_threads(mp, 2));
    TernModel *zero = NULL;
    CHECK_OK(tern_model_load(argv[1], mp, &zero));
    CHECK_OK(tern_model_params_free(mp));
    TernSessionParams *big = NULL;
    CHECK_OK(tern_session_params_new(&big));
    CHECK_OK(tern_session_params_set_sinks(big, 4));
    CHECK_OK(tern_session_params_set_window(big, 8000));
    CHECK_OK(tern_session_params_set_kv_type(big, TERN_KV_F32));
    TernSession *shrunk = NULL;
    CHECK_OK(tern_session_new(zero, big, &shrunk));
    CHECK_OK(tern_session_params_free(big));
    TernStats zs = stats_of(shrunk);
    printf("rpi-zero2w: cache of %llu tokens\n", (unsigned long long)zs.cache_capacity);
    CHECK(seen.shrunk_lines == 1);
    CHECK(zs.cache_capacity > 4 + 512 && zs.cache_capacity < 4 + 8000);
    CHECK_OK(tern_session_free(shrunk));
    CHECK_OK(tern_model_free(zero));
    CHECK_OK(tern_set_log_callback(NULL, NULL, TERN_LOG_DEBUG));

    CHECK_OK(tern_session_free(s));
    CHECK_OK(tern_model_free(model));
    return finish("test_stream");
}
