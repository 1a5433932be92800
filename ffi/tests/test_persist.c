/* Save and restore: a restored session continues exactly as the original does (with a
 * temperature above zero, so the sampler's random state must come back too); bad session
 * files are refused with the right status. */
#include <unistd.h>

#include "common.h"

static TernSessionParams *sampling_params(void) {
    TernSessionParams *sp = small_params(24);
    tern_session_params_set_temperature(sp, 0.9f);
    tern_session_params_set_seed(sp, 1234);
    tern_session_params_set_system_prompt(sp, "You are a helpful gardener.");
    return sp;
}

/* Copies file `from` to `to`, keeping the first `limit` bytes (all when 0). */
static int copy_file(const char *from, const char *to, long limit) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (!in || !out) return 0;
    static char buf[1 << 16];
    long total = 0;
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (limit && total + (long)n > limit) n = (size_t)(limit - total);
        fwrite(buf, 1, n, out);
        total += (long)n;
        if (limit && total >= limit) break;
    }
    fclose(in);
    return fclose(out) == 0;
}

static int write_bytes(const char *path, const char *bytes, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(bytes, 1, len, f);
    return fclose(f) == 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    char dir[] = "/tmp/tern-ffi-persist-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256], other_model[256], bad[256];
    snprintf(path, sizeof path, "%s/chat.tern", dir);
    snprintf(other_model, sizeof other_model, "%s/other.gguf", dir);
    snprintf(bad, sizeof bad, "%s/bad.tern", dir);

    TernModel *model = load_model(argv[1], 2);
    CHECK(model != NULL);
    if (!model) return finish("test_persist");

    /* A conversation, saved after its first exchange. */
    TernSessionParams *sp = sampling_params();
    TernSession *s = NULL;
    CHECK_OK(tern_session_new(model, sp, &s));
    tern_session_params_free(sp);
    Collector first = {0};
    CHECK_OK(tern_session_chat(s, "Name three flowers.", collect, &first, NULL));
    CHECK_OK(tern_session_save(s, path));
    TernStats at_save = stats_of(s);

    /* The original goes on... */
    Collector a = {0};
    CHECK_OK(tern_session_chat(s, "And which of them smells best?", collect, &a, NULL));
    CHECK_OK(tern_session_free(s));

    /* ...and so does the restored one, from the file, as a brand new session. */
    TernSession *r = NULL;
    CHECK_OK(tern_session_restore(model, path, &r));
    CHECK(r != NULL);
    TernStats restored = stats_of(r);
    CHECK(restored.tokens == at_save.tokens);
    CHECK(restored.cache_used == at_save.cache_used);
    CHECK(restored.cache_capacity == at_save.cache_capacity);
    Collector b = {0};
    CHECK_OK(tern_session_chat(r, "And which of them smells best?", collect, &b, NULL));
    printf("first: %s\noriginal: %s\nrestored: %s\n", first.text, a.text, b.text);
    CHECK(a.len > 0);
    CHECK(strcmp(a.text, b.text) == 0);

    /* Different seeds give different text here, so the equality above is not luck. */
    TernSessionParams *sp2 = sampling_params();
    tern_session_params_set_seed(sp2, 99);
    TernSession *s2 = NULL;
    CHECK_OK(tern_session_new(model, sp2, &s2));
    tern_session_params_free(sp2);
    Collector other_seed = {0};
    CHECK_OK(tern_session_chat(s2, "Name three flowers.", collect, &other_seed, NULL));
    CHECK(strcmp(other_seed.text, first.text) != 0);
    CHECK_OK(tern_session_free(s2));

    /* Files that are not sessions of this model. */
    TernSession *x = (TernSession *)0x1; /* must be set to NULL on failure */
    char missing[300];
    snprintf(missing, sizeof missing, "%s/missing.tern", dir);
    CHECK_STATUS(tern_session_restore(model, missing, &x), TERN_ERR_IO);
    CHECK(x == NULL);
    CHECK_ERROR_MENTIONS("missing.tern");

    CHECK(write_bytes(bad, "definitely not a session", 24));
    CHECK_STATUS(tern_session_restore(model, bad, &x), TERN_ERR_SESSION_FILE);
    CHECK_ERROR_MENTIONS("not a Tern session file");

    long half = 0;
    FILE *f = fopen(path, "rb");
    if (f) {
        fseek(f, 0, SEEK_END);
        half = ftell(f) / 2;
        fclose(f);
    }
    CHECK(half > 0 && copy_file(path, bad, half));
    CHECK_STATUS(tern_session_restore(model, bad, &x), TERN_ERR_SESSION_FILE);
    CHECK_ERROR_MENTIONS("corrupt");

    /* A model file that differs in one weight byte is another model. */
    CHECK(copy_file(argv[1], other_model, 0));
    f = fopen(other_model, "r+b");
    CHECK(f != NULL);
    if (f) {
        fseek(f, -1, SEEK_END);
        int last = fgetc(f);
        fseek(f, -1, SEEK_END);
        fputc(last ^ 0x01, f);
        fclose(f);
    }
    TernModel *other = load_model(other_model, 1);
    CHECK(other != NULL);
    CHECK_STATUS(tern_session_restore(other, path, &x), TERN_ERR_SESSION_FILE);
    CHECK_ERROR_MENTIONS("another model");
    CHECK_OK(tern_model_free(other));

    /* Saving where no file can be written. */
    CHECK_STATUS(tern_session_save(r, "/nonexistent-dir/x/chat.tern"), TERN_ERR_IO);
    CHECK_ERROR_MENTIONS("/nonexistent-dir/x/chat.tern");
    /* ...leaves the session working. */
    CHECK_OK(tern_session_chat(r, "Thank you.", NULL, NULL, NULL));

    CHECK_OK(tern_session_free(r));
    CHECK_OK(tern_model_free(model));
    unlink(path);
    unlink(bad);
    unlink(other_model);
    rmdir(dir);
    return finish("test_persist");
}
