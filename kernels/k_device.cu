/* k_device.cu — device discovery: how many GPUs there are and what they are. */
#include "k.h"

#include <cstdio>
#include <cuda_runtime.h>

extern "C" int k_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no device" error */
        return 0;
    }
    return n;
}

extern "C" int k_device_current(int *dev, int *sms)
{
    *dev = 0;
    *sms = 0;
    if (cudaGetDevice(dev) != cudaSuccess ||
        cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, *dev) != cudaSuccess ||
        *sms < 1) {
        cudaGetLastError();
        return -1;
    }
    return 0;
}

extern "C" int k_device_describe(int dev, char *buf, unsigned long buf_len)
{
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
        cudaGetLastError();
        return -1; /* FQ_EINVAL */
    }
    snprintf(buf, buf_len, "%s (sm_%d%d, %d SMs, %zu MiB)", p.name, p.major, p.minor,
             p.multiProcessorCount, (size_t)(p.totalGlobalMem >> 20));
    return 0;
}
