// Letterbox on the GPU: uint8 BGR frame (HxWx3, row pitch src_step bytes) -> planar RGB in
// 0..1, gray (114) padding, written straight into the engine's input (float32 or float16).
// One thread per output pixel; it writes the pixel's three planes.
//
// It matches lepton_edge/preprocess.py's Letterbox, which uses cv2.resize INTER_LINEAR:
// half-pixel centres, source index clamped at the borders (replicate), and cv2's switch to
// INTER_AREA for an exact 2x downscale gives the same averages as this bilinear mapping does.
// cv2 interpolates in 11-bit fixed point and rounds to uint8; this kernel keeps the exact
// bilinear value, so the two differ by less than 1/255 after scaling.
// No headers: float16 is stored through PTX cvt so NVRTC and nvcc both compile it as is.

__device__ __forceinline__ void put(float* p, float v) { *p = v; }

__device__ __forceinline__ void put(unsigned short* p, float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    *p = h;
}

// cv2's source coordinate for output index d: fractional weight and the two taps.
__device__ __forceinline__ void taps(int d, float scale, int size, int* i0, int* i1, float* w) {
    float f = (d + 0.5f) * scale - 0.5f;
    int s = (int)floorf(f);
    f -= s;
    if (s < 0) { s = 0; f = 0.f; }
    if (s >= size - 1) { s = size - 1; f = 0.f; }
    *i0 = s;
    *i1 = min(s + 1, size - 1);
    *w = f;
}

template <typename T>
__device__ void letterbox(const unsigned char* __restrict__ src, int src_w, int src_h,
                          int src_step, T* __restrict__ dst, int dst_w, int dst_h,
                          int new_w, int new_h, int pad_x, int pad_y,
                          float scale_x, float scale_y, float pad_value) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dst_w || y >= dst_h) return;
    const size_t plane = (size_t)dst_w * dst_h;
    const size_t o = (size_t)y * dst_w + x;
    const int cx = x - pad_x, cy = y - pad_y;
    if (cx < 0 || cy < 0 || cx >= new_w || cy >= new_h) {
        put(dst + o, pad_value);
        put(dst + plane + o, pad_value);
        put(dst + 2 * plane + o, pad_value);
        return;
    }
    int x0, x1, y0, y1;
    float fx, fy;
    taps(cx, scale_x, src_w, &x0, &x1, &fx);
    taps(cy, scale_y, src_h, &y0, &y1, &fy);
    const unsigned char* r0 = src + (size_t)y0 * src_step;
    const unsigned char* r1 = src + (size_t)y1 * src_step;
    const float inv = 1.f / 255.f;
    for (int c = 0; c < 3; ++c) {  // BGR in, plane 2 - c out: RGB
        const float top = r0[3 * x0 + c] + fx * (r0[3 * x1 + c] - r0[3 * x0 + c]);
        const float bot = r1[3 * x0 + c] + fx * (r1[3 * x1 + c] - r1[3 * x0 + c]);
        put(dst + (2 - c) * plane + o, (top + fy * (bot - top)) * inv);
    }
}

extern "C" __global__ void letterbox_f32(const unsigned char* src, int src_w, int src_h,
                                         int src_step, float* dst, int dst_w, int dst_h,
                                         int new_w, int new_h, int pad_x, int pad_y,
                                         float scale_x, float scale_y, float pad_value) {
    letterbox<float>(src, src_w, src_h, src_step, dst, dst_w, dst_h, new_w, new_h, pad_x,
                     pad_y, scale_x, scale_y, pad_value);
}

extern "C" __global__ void letterbox_f16(const unsigned char* src, int src_w, int src_h,
                                         int src_step, unsigned short* dst, int dst_w,
                                         int dst_h, int new_w, int new_h, int pad_x, int pad_y,
                                         float scale_x, float scale_y, float pad_value) {
    letterbox<unsigned short>(src, src_w, src_h, src_step, dst, dst_w, dst_h, new_w, new_h,
                              pad_x, pad_y, scale_x, scale_y, pad_value);
}
