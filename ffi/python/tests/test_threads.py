"""Long calls release the GIL: while two sessions of one model reply in two Python threads,
a third thread (here the main one) keeps running Python, and each session gives the reply
it gives alone."""

import threading
import time


def test_two_threads_overlap_and_agree(model):
    prompts = ["Tell me about rivers.", "Tell me about mountains."]
    alone = [model.session(temperature=0.7, seed=11, max_tokens=48).chat(p) for p in prompts]

    spans, replies = [None, None], [None, None]
    barrier = threading.Barrier(2)

    def work(i):
        s = model.session(temperature=0.7, seed=11, max_tokens=48)
        barrier.wait()
        t0 = time.monotonic()
        replies[i] = s.chat(prompts[i])
        spans[i] = (t0, time.monotonic())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    ticks = []
    while any(t.is_alive() for t in threads):
        ticks.append(time.monotonic())
        time.sleep(0.001)
    for t in threads:
        t.join()
    assert replies == alone
    # Had a call held the GIL, no Python could have run in the middle of it.
    for start, end in spans:
        quarter = (end - start) / 4
        assert any(start + quarter < t < end - quarter for t in ticks), (start, end)
