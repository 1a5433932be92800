/* Speculative decoding through the C ABI: a draft model on the session parameters gives the
 * same greedy replies as the model alone (here the draft is the model itself, so every
 * proposal is right), a saved session restored with a draft replies as one restored without,
 * and bad draft settings are refused. */
#include "common.h"

#include <unistd.h>

/* Greedy replies to two messages, with `draft` (NULL: none) proposing `k` tokens a step. */
static void replies(TernModel *model, TernModel *draft, uint32_t k, Collector out[2]) {
    TernSessionParams *sp = small_params(48);
    CHECK_OK(tern_session_params_set_temperature(sp, 0.0f));
    CHECK_OK(tern_session_params_set_draft(sp, draft, k));
    TernSession *s = NULL;
    CHECK_OK(tern_session_new(model, sp, &s));
    CHECK_OK(tern_session_params_free(sp));
    if (!s) return;
    const char *messages[2] = {"Name three colours of the sea.", "And of the sky?"};
    for (int i = 0; i < 2; i++) {
        TernStopReason stop = TERN_STOP_CANCELLED;
        memset(&out[i], 0, sizeof out[i]);
        CHECK_OK(tern_session_chat(s, messages[i], collect, &out[i], &stop));
        CHECK(out[i].len > 0 && out[i].bad_pieces == 0);
    }
    CHECK_OK(tern_session_free(s));
}

/* A greedy conversation saved after one exchange, then restored twice from the file: once
 * alone, once with `draft` on the parameters of `tern_session_restore_with`. The second
 * message's replies are the same text, and the drafted one did use its draft. */
static void restore_with_draft(TernModel *model, TernModel *draft) {
    char dir[] = "/tmp/tern-ffi-speculative-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/chat.tern", dir);
    TernSessionParams *sp = small_params(48);
    CHECK_OK(tern_session_params_set_temperature(sp, 0.0f));
    TernSession *s = NULL;
    CHECK_OK(tern_session_new(model, sp, &s));
    if (!s) return;
    static Collector first, alone, drafted;
    TernStopReason stop = TERN_STOP_CANCELLED;
    CHECK_OK(tern_session_chat(s, "Name three colours of the sea.", collect, &first, &stop));
    CHECK_OK(tern_session_save(s, path));
    CHECK_OK(tern_session_free(s));

    TernSession *a = NULL, *d = NULL;
    CHECK_OK(tern_session_restore_with(model, NULL, path, &a));
    CHECK_OK(tern_session_params_set_draft(sp, draft, 0));
    CHECK_OK(tern_session_restore_with(model, sp, path, &d));
    if (a && d) {
        CHECK_OK(tern_session_chat(a, "And of the sky?", collect, &alone, &stop));
        CHECK_OK(tern_session_chat(d, "And of the sky?", collect, &drafted, &stop));
        CHECK(alone.len > 0 && strcmp(alone.text, drafted.text) == 0);
        /* The draft is the model itself, but it was fed the saved history afresh while the
         * model's cache came from the file: near-ties may differ, so most proposals are kept,
         * not necessarily all. */
        TernStats sa = stats_of(a), sd = stats_of(d);
        CHECK(sa.size == sizeof sa && sd.size == sizeof sd);
        CHECK(sa.draft_proposed == 0 && sd.draft_proposed > 0);
        CHECK(sd.draft_accepted > 0 && sd.draft_accepted <= sd.draft_proposed);
    }
    CHECK_OK(tern_session_free(a));
    CHECK_OK(tern_session_free(d));
    /* Bad arguments: a params handle that is not one, a missing file. */
    TernSession *x = NULL;
    CHECK_STATUS(tern_session_restore_with(model, (const TernSessionParams *)model, path, &x),
                 TERN_ERR_INVALID_HANDLE);
    CHECK(x == NULL);
    CHECK_STATUS(tern_session_restore_with(model, sp, "/nonexistent-dir/x.tern", &x),
                 TERN_ERR_IO);
    CHECK_OK(tern_session_params_free(sp));
    unlink(path);
    rmdir(dir);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    TernModel *model = load_model(argv[1], 2);
    CHECK(model != NULL);
    if (!model) return finish("test_speculative");

    static Collector alone[2], adaptive[2], fixed[2];
    replies(model, NULL, 0, alone);
    replies(model, model, 0, adaptive);
    replies(model, model, 3, fixed);
    for (int i = 0; i < 2; i++) {
        CHECK(strcmp(alone[i].text, adaptive[i].text) == 0);
        CHECK(strcmp(alone[i].text, fixed[i].text) == 0);
    }

    restore_with_draft(model, model);

    /* More draft tokens per step than allowed; a draft that is not a model handle. */
    TernSessionParams *sp = NULL;
    CHECK_OK(tern_session_params_new(&sp));
    CHECK_STATUS(tern_session_params_set_draft(sp, model, 17), TERN_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tern_session_params_set_draft(sp, (const TernModel *)sp, 2),
                 TERN_ERR_INVALID_HANDLE);
    /* The parameters keep the draft alive after its handle is freed. */
    TernModel *draft = load_model(argv[1], 1);
    CHECK_OK(tern_session_params_set_draft(sp, draft, 2));
    CHECK_OK(tern_model_free(draft));
    TernSession *s = NULL;
    CHECK_OK(tern_session_new(model, sp, &s));
    TernStopReason stop = TERN_STOP_CANCELLED;
    static Collector c;
    CHECK_OK(tern_session_chat(s, "Hi", collect, &c, &stop));
    CHECK_OK(tern_session_free(s));
    CHECK_OK(tern_session_params_free(sp));
    CHECK_OK(tern_model_free(model));
    return finish("test_speculative");
}
