// equiframe: per-row tensor rotation kernel (CPU), built on first use by equiframe._native.
//
//   y[r] = rho(M_r) x[xr],   M_r = R[rr] (or R[rr]^T when transpose != 0),
//   xr = xidx ? xidx[r] : r,  rr = ridx ? ridx[r] : r,
//
// where rho acts block by block on the channels of a row: a block is described by one entry
// (offset, order, count, pseudo) = `count` tensors of order 0, 1 or 2 stored one after the other from
// channel `offset`, each of size d^order (row-major components); pseudo blocks are also multiplied by
// det[rr]. Order 0: copy (times det if pseudo); order 1: M v; order 2: M T M^T (two d x d products: 54
// multiply-adds for d = 3; a scalar Kronecker-square version, 81, measured slower). With AVX-512, float32
// order-2 blocks in 3-D use the Kronecker square M (x) M in vector registers instead (9 vector FMAs per
// tensor, the table rebuilt only when the row's matrix changes). Channels not covered by an entry
// are left untouched (the caller covers every channel). Rows [r0, r1) only, so the caller can split the
// rows across threads. No allocation, no exceptions, plain C ABI (called through ctypes).
// Also: the edge geometry [R_i (x_j - x_i), |x_j - x_i|_eps] of the tensor-frame layers, in one pass.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

typedef int64_t i64;

template <typename T, int D>
static void rotate_rows(const T* x, const i64* xidx, const T* R, const i64* ridx, const T* det, int transpose,
                        T* y, i64 r0, i64 r1, i64 C, const int32_t* ent, int n_ent) {
#if defined(__AVX512F__)
  // float, d = 3: order-2 blocks as y_t = (M (x) M) vec(X_t), one 16-lane FMA per input component
  // (9 per tensor instead of 54 scalar ones); the Kronecker table is rebuilt only when the row's matrix
  // changes (edges grouped by receiver share it).
  constexpr bool simd = std::is_same<T, float>::value && D == 3;
  alignas(64) float K[9][16] = {};
  i64 k_of = -1;
#endif
  for (i64 r = r0; r < r1; ++r) {
    const i64 xr = xidx ? xidx[r] : r, rr = ridx ? ridx[r] : r;
    const T* Rr = R + rr * D * D;
    T M[D][D];
    for (int a = 0; a < D; ++a)
      for (int c = 0; c < D; ++c) M[a][c] = transpose ? Rr[c * D + a] : Rr[a * D + c];
    const T s = det ? det[rr] : (T)1;
    const T* xs = x + xr * C;
    T* ys = y + r * C;
    for (int e = 0; e < n_ent; ++e) {
      const int off = ent[4 * e], order = ent[4 * e + 1], count = ent[4 * e + 2], pseudo = ent[4 * e + 3];
      const T f = pseudo ? s : (T)1;
      if (order == 0) {
        if (pseudo)
          for (int c = 0; c < count; ++c) ys[off + c] = xs[off + c] * f;
        else
          std::memcpy(ys + off, xs + off, sizeof(T) * (size_t)count);
      } else if (order == 1) {
        for (int t = 0; t < count; ++t) {
          const T* v = xs + off + t * D;
          T* o = ys + off + t * D;
          for (int a = 0; a < D; ++a) {
            T acc = 0;
            for (int c = 0; c < D; ++c) acc += M[a][c] * v[c];
            o[a] = acc * f;
          }
        }
      }
#if defined(__AVX512F__)
      else if (simd && count >= 2) {
        if (k_of != rr) {
          for (int c = 0; c < 3; ++c)
            for (int e2 = 0; e2 < 3; ++e2)
              for (int a = 0; a < 3; ++a)
                for (int b = 0; b < 3; ++b) K[c * 3 + e2][a * 3 + b] = (float)(M[a][c] * M[b][e2]);
          k_of = rr;
        }
        __m512 k[9];
        for (int c = 0; c < 9; ++c) k[c] = _mm512_load_ps(K[c]);
        const __m512 fv = _mm512_set1_ps((float)f);
        for (int t = 0; t < count; ++t) {
          const float* v = (const float*)(xs + off + t * 9);
          __m512 acc = _mm512_mul_ps(_mm512_set1_ps(v[0]), k[0]);
          for (int c = 1; c < 9; ++c) acc = _mm512_fmadd_ps(_mm512_set1_ps(v[c]), k[c], acc);
          if (pseudo) acc = _mm512_mul_ps(acc, fv);
          _mm512_mask_storeu_ps((float*)(ys + off + t * 9), (__mmask16)0x1FF, acc);
        }
      }
#endif
      else {  // order 2: M T M^T, 2 d^3 multiply-adds (fully unrolled for the fixed D)
        for (int t = 0; t < count; ++t) {
          const T* v = xs + off + t * D * D;
          T* o = ys + off + t * D * D;
          T tmp[D][D];
          for (int a = 0; a < D; ++a)
            for (int b = 0; b < D; ++b) {
              T acc = 0;
              for (int c = 0; c < D; ++c) acc += M[a][c] * v[c * D + b];
              tmp[a][b] = acc;
            }
          for (int a = 0; a < D; ++a)
            for (int b = 0; b < D; ++b) {
              T acc = 0;
              for (int c = 0; c < D; ++c) acc += tmp[a][c] * M[b][c];
              o[a * D + b] = acc * f;
            }
        }
      }
    }
  }
}

template <typename T>
static int dispatch(const T* x, const i64* xidx, const T* R, const i64* ridx, const T* det, int transpose, T* y,
                    i64 r0, i64 r1, i64 C, int d, const int32_t* ent, int n_ent) {
  switch (d) {
    case 2: rotate_rows<T, 2>(x, xidx, R, ridx, det, transpose, y, r0, r1, C, ent, n_ent); return 0;
    case 3: rotate_rows<T, 3>(x, xidx, R, ridx, det, transpose, y, r0, r1, C, ent, n_ent); return 0;
    case 4: rotate_rows<T, 4>(x, xidx, R, ridx, det, transpose, y, r0, r1, C, ent, n_ent); return 0;
    default: return 1;
  }
}

// Edge geometry in the receiver's frame, one pass over the edges e in [e0, e1):
//   v = pos_src[src[e]] - pos_dst[dst[e]];  out[e] = [R[dst[e]] v (if kind & 1), sqrt(|v|^2 + eps^2) - eps
//   (if kind & 2)], R = identity when R == nullptr.
template <typename T, int D>
static void edge_geometry(const T* pos_src, const T* pos_dst, const T* R, const i64* src, const i64* dst, T* out,
                          i64 e0, i64 e1, int kind, T eps) {
  const int width = ((kind & 1) ? D : 0) + ((kind & 2) ? 1 : 0);
  for (i64 e = e0; e < e1; ++e) {
    const T* ps = pos_src + src[e] * D;
    const T* pd = pos_dst + dst[e] * D;
    T v[D];
    T sq = 0;
    for (int c = 0; c < D; ++c) {
      v[c] = ps[c] - pd[c];
      sq += v[c] * v[c];
    }
    T* o = out + e * width;
    if (kind & 1) {
      if (R) {
        const T* Rr = R + dst[e] * D * D;
        for (int a = 0; a < D; ++a) {
          T acc = 0;
          for (int c = 0; c < D; ++c) acc += Rr[a * D + c] * v[c];
          o[a] = acc;
        }
      } else {
        for (int a = 0; a < D; ++a) o[a] = v[a];
      }
      o += D;
    }
    if (kind & 2) o[0] = std::sqrt(sq + eps * eps) - eps;
  }
}

template <typename T>
static int dispatch_geometry(const T* pos_src, const T* pos_dst, const T* R, const i64* src, const i64* dst, T* out,
                             i64 e0, i64 e1, int d, int kind, T eps) {
  switch (d) {
    case 2: edge_geometry<T, 2>(pos_src, pos_dst, R, src, dst, out, e0, e1, kind, eps); return 0;
    case 3: edge_geometry<T, 3>(pos_src, pos_dst, R, src, dst, out, e0, e1, kind, eps); return 0;
    case 4: edge_geometry<T, 4>(pos_src, pos_dst, R, src, dst, out, e0, e1, kind, eps); return 0;
    default: return 1;
  }
}

extern "C" {
int equiframe_abi_version() { return 2; }

int equiframe_edge_geometry_f32(const float* ps, const float* pd, const float* R, const i64* src, const i64* dst,
                                float* out, i64 e0, i64 e1, int d, int kind, double eps) {
  return dispatch_geometry<float>(ps, pd, R, src, dst, out, e0, e1, d, kind, (float)eps);
}

int equiframe_edge_geometry_f64(const double* ps, const double* pd, const double* R, const i64* src,
                                const i64* dst, double* out, i64 e0, i64 e1, int d, int kind, double eps) {
  return dispatch_geometry<double>(ps, pd, R, src, dst, out, e0, e1, d, kind, eps);
}

int equiframe_rotate_f32(const float* x, const i64* xidx, const float* R, const i64* ridx, const float* det,
                         int transpose, float* y, i64 r0, i64 r1, i64 C, int d, const int32_t* ent, int n_ent) {
  return dispatch<float>(x, xidx, R, ridx, det, transpose, y, r0, r1, C, d, ent, n_ent);
}

int equiframe_rotate_f64(const double* x, const i64* xidx, const double* R, const i64* ridx, const double* det,
                         int transpose, double* y, i64 r0, i64 r1, i64 C, int d, const int32_t* ent, int n_ent) {
  return dispatch<double>(x, xidx, R, ridx, det, transpose, y, r0, r1, C, d, ent, n_ent);
}
}
