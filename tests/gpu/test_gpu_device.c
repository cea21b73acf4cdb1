/* test_gpu_device.c — the CUDA runtime finds the GPU and describes it; skips (77) without one. */
#include "k.h"

#include <stdio.h>
#include <string.h>

int main(void)
{
    int n = k_device_count();
    if (n == 0) {
        printf("no CUDA device: skipping\n");
        return 77;
    }
    char desc[256] = "";
    if (k_device_describe(0, desc, sizeof desc) != 0 || strstr(desc, "sm_") == NULL) {
        fprintf(stderr, "device 0 could not be described: '%s'\n", desc);
        return 1;
    }
    printf("device 0: %s\n", desc);
    return 0;
}
