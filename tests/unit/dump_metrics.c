/* dump_metrics.c — prints a rendered srv_metrics exposition after a sample workload, for
 * `promtool check metrics` (tests/integration/test_metrics_promtool.py).
 *
 * Usage: dump_metrics [model_name]   (default "SmolLM2-135M-Instruct"; pass one with quotes,
 * backslashes or newlines to check the escaping against promtool's parser). */
#include "srv_metrics.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    srv_metrics_info info = {.model_name = argc > 1 ? argv[1] : "SmolLM2-135M-Instruct",
                             .version = "0.1.0",
                             .backend = "cpu",
                             .mode = "int6",
                             .bits_per_weight = 6.125,
                             .max_model_len = 8192};
    srv_metrics *m = srv_metrics_create(&info);
    if (!m) {
        fprintf(stderr, "dump_metrics: out of memory\n");
        return 1;
    }
    static const char *const finish[] = {"stop", "length", "abort", "error", "stop"};
    for (int i = 0; i < 50; i++) {
        srv_request_stats st = {.prompt_tokens = 10 + 37 * i,
                                .generation_tokens = 1 + 13 * i,
                                .queue_s = 0.0005 * i,
                                .ttft_s = i % 7 == 6 ? -1.0 : 0.003 * (i + 1),
                                .e2e_s = 0.05 * (i + 1),
                                .prefill_s = 0.002 * (i + 1),
                                .decode_s = 0.045 * (i + 1),
                                .finish_reason = finish[i % 5],
                                .max_tokens = 16 << (i % 6),
                                .n = 1 + i % 3};
        srv_metrics_request_finished(m, &st);
        for (int k = 0; k < 5; k++)
            srv_metrics_inter_token(m, 0.004 + 0.001 * k * (i % 4));
        srv_metrics_iteration(m, 1 + 97 * i);
    }
    srv_metrics_rejected(m, "queue_full");
    srv_metrics_rejected(m, "too_long");
    srv_metrics_rejected(m, "some \"new\" reason\\");
    srv_metrics_aborted(m, "client_disconnect");
    srv_metrics_aborted(m, NULL);
    srv_sched_gauges g = {.running = 5,
                          .waiting = 2,
                          .kv_blocks_used = 123,
                          .kv_blocks_total = 512,
                          .batch_size = 5,
                          .preemptions_total = 3};
    srv_metrics_set_sched(m, &g);

    size_t len = 0;
    char *text = srv_metrics_render(m, &len);
    srv_metrics_destroy(m);
    if (!text) {
        fprintf(stderr, "dump_metrics: out of memory\n");
        return 1;
    }
    int ok = fwrite(text, 1, len, stdout) == len;
    free(text);
    return ok && fflush(stdout) == 0 ? 0 : 1;
}
