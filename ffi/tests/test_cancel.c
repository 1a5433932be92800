/* Cancelling: from another thread during a generation and during a long prefill, from the
 * piece callback, by freeing the session; a cancel never carries over to a later call, and
 * a cancelled session works on. */
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <time.h>

#include "common.h"

/* Hands the session to another thread at a chosen piece and waits until it has acted. */
typedef struct {
    Collector reply;
    int at_piece;
    sem_t ask, acted;
    TernSession *session;
    int free_instead; /* the other thread frees the session rather than cancelling */
    TernStatus other_status;
} Handshake;

static bool on_piece(const char *piece, size_t len, void *user_data) {
    Handshake *h = (Handshake *)user_data;
    bool go = collect(piece, len, &h->reply);
    if (h->reply.pieces == h->at_piece) {
        sem_post(&h->ask);
        sem_wait(&h->acted); /* the cancel is raised before this piece is answered */
    }
    return go;
}

static void *other_thread(void *arg) {
    Handshake *h = (Handshake *)arg;
    sem_wait(&h->ask);
    h->other_status = h->free_instead ? tern_session_free(h->session)
                                      : tern_session_cancel(h->session);
    sem_post(&h->acted);
    return NULL;
}

static bool cancel_from_callback(const char *piece, size_t len, void *user_data) {
    Handshake *h = (Handshake *)user_data;
    collect(piece, len, &h->reply);
    if (h->reply.pieces == h->at_piece) tern_session_cancel(h->session);
    return true;
}

/* Cancels `session` every few milliseconds until told to stop. */
typedef struct {
    TernSession *session;
    atomic_int done;
    int cancels;
} Canceller;

static void *keep_cancelling(void *arg) {
    Canceller *c = (Canceller *)arg;
    struct timespec pause = {0, 20 * 1000 * 1000};
    while (!atomic_load(&c->done)) {
        nanosleep(&pause, NULL);
        tern_session_cancel(c->session);
        c->cancels++;
    }
    return NULL;
}

static TernSession *new_session(TernModel *model, uint32_t max_tokens) {
    TernSessionParams *sp = small_params(max_tokens);
    TernSession *s = NULL;
    CHECK_OK(tern_session_new(model, sp, &s));
    tern_session_params_free(sp);
    return s;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    TernModel *model = load_model(argv[1], 2);
    CHECK(model != NULL);
    if (!model) return finish("test_cancel");
    const char *story = "Write a very long story about a dragon who learns to read.";

    /* 1. From another thread, in the middle of a long reply. */
    TernSession *s = new_session(model, 200);
    Handshake h;
    memset(&h, 0, sizeof h);
    h.at_piece = 2;
    h.session = s;
    sem_init(&h.ask, 0, 0);
    sem_init(&h.acted, 0, 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, other_thread, &h) == 0);
    TernStopReason stop = TERN_STOP_END_OF_TURN;
    CHECK_STATUS(tern_session_chat(s, story, on_piece, &h, &stop), TERN_CANCELLED);
    pthread_join(t, NULL);
    CHECK_OK(h.other_status);
    CHECK(stop == TERN_STOP_CANCELLED);
    CHECK_ERROR_MENTIONS("cancelled");
    /* Stopped within one token: at most the text held back for stop strings follows. */
    CHECK(h.reply.pieces >= 2 && h.reply.pieces <= 3);
    TernStats st = stats_of(s);
    printf("cancelled after %d pieces, %llu tokens: %s\n", h.reply.pieces,
           (unsigned long long)st.generated_tokens, h.reply.text);
    CHECK(st.generated_tokens >= 2 && st.generated_tokens < 8);

    /* The session works on, and a cancel made while nothing ran does not stop the next call. */
    CHECK_OK(tern_session_cancel(s));
    Collector c = {0};
    stop = TERN_STOP_CANCELLED;
    CHECK_OK(tern_session_chat(s, "Say hello.", collect, &c, &stop));
    CHECK(stop == TERN_STOP_END_OF_TURN || stop == TERN_STOP_MAX_TOKENS);
    CHECK(c.len > 0);

    /* 2. From the piece callback itself. */
    Handshake h2;
    memset(&h2, 0, sizeof h2);
    h2.at_piece = 3;
    h2.session = s;
    CHECK_STATUS(tern_session_chat(s, story, cancel_from_callback, &h2, &stop), TERN_CANCELLED);
    CHECK(stop == TERN_STOP_CANCELLED);
    CHECK(h2.reply.pieces >= 3 && h2.reply.pieces <= 4);

    /* 3. During a long prefill (thousands of tokens, fed in batches): stopped at the next
     * batch. TERN_CANCELLED itself says that not all of the text went in. */
    static char text[16000];
    text[0] = 0;
    while (strlen(text) + 64 < sizeof text)
        strcat(text, "The quick brown fox jumps over the lazy dog. ");
    CHECK_OK(tern_session_reset(s));
    Canceller k = {.session = s};
    atomic_init(&k.done, 0);
    CHECK(pthread_create(&t, NULL, keep_cancelling, &k) == 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t fed = 12345;
    CHECK_STATUS(tern_session_feed_text(s, text, &fed), TERN_CANCELLED);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    atomic_store(&k.done, 1);
    pthread_join(t, NULL);
    CHECK(fed == 12345); /* not written on failure */
    st = stats_of(s);
    printf("prefill cancelled after %llu tokens, %.2f s (%d cancels sent)\n",
           (unsigned long long)st.prompt_tokens,
           (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, k.cancels);
    /* A few batches at most went in, far fewer than the text's ~3000 tokens. */
    CHECK(st.prompt_tokens < 1500);
    CHECK(st.tokens == st.prompt_tokens);

    /* The conversation goes on from what was fed. */
    CHECK_OK(tern_session_feed_text(s, " The end.", &fed));
    CHECK(fed > 0);

    /* 4. Freeing the session from another thread cancels the call running in it; the handle
     * is closed from then on. */
    CHECK_OK(tern_session_reset(s));
    Handshake h3;
    memset(&h3, 0, sizeof h3);
    h3.at_piece = 2;
    h3.session = s;
    h3.free_instead = 1;
    sem_init(&h3.ask, 0, 0);
    sem_init(&h3.acted, 0, 0);
    CHECK(pthread_create(&t, NULL, other_thread, &h3) == 0);
    CHECK_STATUS(tern_session_chat(s, story, on_piece, &h3, &stop), TERN_CANCELLED);
    pthread_join(t, NULL);
    CHECK_OK(h3.other_status);
    CHECK_STATUS(tern_session_chat(s, "Hello?", NULL, NULL, NULL), TERN_ERR_INVALID_HANDLE);
    CHECK_ERROR_MENTIONS("closed");
    CHECK_STATUS(tern_session_cancel(s), TERN_ERR_INVALID_HANDLE);

    sem_destroy(&h.ask);
    sem_destroy(&h.acted);
    sem_destroy(&h3.ask);
    sem_destroy(&h3.acted);
    CHECK_OK(tern_model_free(model));
    return finish("test_cancel");
}
