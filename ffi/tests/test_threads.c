/* Two sessions on one model, in two threads at once: each must reply exactly as it does when
 * run alone (greedy decoding is deterministic), and the model handle may be freed while the
 * sessions still run. */
#include <pthread.h>

#include "common.h"

static const char *PROMPTS[2] = {
    "What is the capital of France?",
    "Name a colour of the sky.",
};

typedef struct {
    TernModel *model;
    const char *prompt;
    Collector reply;
    TernStatus status;
    pthread_barrier_t *start;
} Job;

static void run_alone(TernModel *model, const char *prompt, Collector *out) {
    TernSessionParams *sp = small_params(20);
    TernSession *s = NULL;
    CHECK_OK(tern_session_new(model, sp, &s));
    tern_session_params_free(sp);
    CHECK_OK(tern_session_chat(s, prompt, collect, out, NULL));
    CHECK_OK(tern_session_free(s));
}

static void *worker(void *arg) {
    Job *job = (Job *)arg;
    TernSessionParams *sp = small_params(20);
    TernSession *s = NULL;
    job->status = tern_session_new(job->model, sp, &s);
    tern_session_params_free(sp);
    pthread_barrier_wait(job->start);
    if (job->status == TERN_OK) {
        job->status = tern_session_chat(s, job->prompt, collect, &job->reply, NULL);
        tern_session_free(s);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    TernModel *model = load_model(argv[1], 2);
    CHECK(model != NULL);
    if (!model) return finish("test_threads");

    /* The truth: each prompt in a session of its own, one after the other. */
    Collector alone[2];
    memset(alone, 0, sizeof alone);
    for (int i = 0; i < 2; i++) run_alone(model, PROMPTS[i], &alone[i]);
    CHECK(alone[0].len > 0 && alone[1].len > 0);
    CHECK(strcmp(alone[0].text, alone[1].text) != 0);

    /* Both at once, on one model. The barrier makes both sessions exist before either
     * generates; the model handle is freed meanwhile: the sessions keep the model alive. */
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 3);
    Job jobs[2];
    pthread_t threads[2];
    memset(jobs, 0, sizeof jobs);
    for (int i = 0; i < 2; i++) {
        jobs[i].model = model;
        jobs[i].prompt = PROMPTS[i];
        jobs[i].start = &start;
        CHECK(pthread_create(&threads[i], NULL, worker, &jobs[i]) == 0);
    }
    pthread_barrier_wait(&start);
    CHECK_OK(tern_model_free(model));
    for (int i = 0; i < 2; i++) pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start);

    for (int i = 0; i < 2; i++) {
        printf("thread %d: %s\n", i, jobs[i].reply.text);
        CHECK_STATUS(jobs[i].status, TERN_OK);
        CHECK(jobs[i].reply.bad_pieces == 0);
        CHECK(strcmp(jobs[i].reply.text, alone[i].text) == 0);
    }

    /* The freed model handle is refused from now on. */
    TernSession *s = NULL;
    CHECK_STATUS(tern_session_new(model, NULL, &s), TERN_ERR_INVALID_HANDLE);
    CHECK(s == NULL);
    return finish("test_threads");
}
