/* k.h — the host-side contract of the CUDA kernels (C-callable). Only built when nvcc is present.
 */
#ifndef K_H
#define K_H

#ifdef __cplusplus
extern "C" {
#endif

/* Number of CUDA devices usable by this process; 0 when there is no driver or no GPU (never an
 * error: GPU tests call this to decide to skip). Any thread. */
int k_device_count(void);

/* Writes "NAME (sm_XY, N SMs, M MiB)" of device `dev` into buf; returns 0 or a negative FQ_E* code.
 * Any thread. */
int k_device_describe(int dev, char *buf, unsigned long buf_len);

#ifdef __cplusplus
}
#endif

#endif /* K_H */
