#include "kernels/tensor_type.h"

#include <immintrin.h>

#include <cstring>

#include "common/check.h"
#include "common/half.h"

namespace canopy {

// Block layouts (GGML):
//   Q4_0: { f16 d; u8 qs[16]; }          x = d * (q - 8), low nibbles are elements 0..15
//   Q4_1: { f16 d; f16 m; u8 qs[16]; }   x = d * q + m
//   Q8_0: { f16 d; i8 qs[32]; }          x = d * q

std::optional<TensorType> TensorTypeFromGgml(uint32_t id) {
  switch (id) {
    case 0: return TensorType::kF32;
    case 1: return TensorType::kF16;
    case 2: return TensorType::kQ4_0;
    case 3: return TensorType::kQ4_1;
    case 8: return TensorType::kQ8_0;
    case 30: return TensorType::kBF16;
    default: return std::nullopt;
  }
}

const char* TensorTypeName(TensorType t) {
  switch (t) {
    case TensorType::kF32: return "F32";
    case TensorType::kF16: return "F16";
    case TensorType::kQ4_0: return "Q4_0";
    case TensorType::kQ4_1: return "Q4_1";
    case TensorType::kQ8_0: return "Q8_0";
    case TensorType::kBF16: return "BF16";
  }
  return "?";
}

int64_t TensorTypeBlockSize(TensorType t) {
  switch (t) {
    case TensorType::kQ4_0: case TensorType::kQ4_1: case TensorType::kQ8_0: return 32;
    default: return 1;
  }
}

int64_t TensorTypeBlockBytes(TensorType t) {
  switch (t) {
    case TensorType::kF32: return 4;
    case TensorType::kF16: case TensorType::kBF16: return 2;
    case TensorType::kQ4_0: return 18;
    case TensorType::kQ4_1: return 20;
    case TensorType::kQ8_0: return 34;
  }
  return 0;
}

namespace {

#if defined(__AVX2__) && defined(__F16C__)
// AVX2 versions. Each element is computed with exactly the scalar code's operations (an
// exact int→float conversion, then a rounded multiply, then a rounded add), so the results
// are bitwise the same as the portable loops below; the kernels rely on that.
inline __m256 Widen8(__m128i bytes8) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes8)); }

bool DequantizeRowAvx2(TensorType t, const uint8_t* src, float* dst, int64_t n) {
  const __m128i mask = _mm_set1_epi8(0x0f);
  switch (t) {
    case TensorType::kF16:
      for (int64_t i = 0; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i))));
      }
      for (int64_t i = n / 8 * 8; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = F16ToF32(h);
      }
      return true;
    case TensorType::kQ4_1:
      for (int64_t b = 0; b < n / 32; ++b, src += 20, dst += 32) {
        uint16_t dh, mh;
        std::memcpy(&dh, src, 2);
        std::memcpy(&mh, src + 2, 2);
        const __m256 d = _mm256_set1_ps(F16ToF32(dh)), m = _mm256_set1_ps(F16ToF32(mh));
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 4));
        const __m128i lo = _mm_and_si128(q, mask), hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_mul_ps(d, Widen8(lo)), m));
        _mm256_storeu_ps(dst + 8, _mm256_add_ps(_mm256_mul_ps(d, Widen8(_mm_srli_si128(lo, 8))), m));
        _mm256_storeu_ps(dst + 16, _mm256_add_ps(_mm256_mul_ps(d, Widen8(hi)), m));
        _mm256_storeu_ps(dst + 24, _mm256_add_ps(_mm256_mul_ps(d, Widen8(_mm_srli_si128(hi, 8))), m));
      }
      return true;
    case TensorType::kQ4_0:
      for (int64_t b = 0; b < n / 32; ++b, src += 18, dst += 32) {
        uint16_t dh;
        std::memcpy(&dh, src, 2);
        const __m256 d = _mm256_set1_ps(F16ToF32(dh));
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2));
        const __m128i eight = _mm_set1_epi8(8);
        const __m128i lo = _mm_sub_epi8(_mm_and_si128(q, mask), eight);
        const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), mask), eight);
        auto w8 = [](__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); };
        _mm256_storeu_ps(dst, _mm256_mul_ps(d, w8(lo)));
        _mm256_storeu_ps(dst + 8, _mm256_mul_ps(d, w8(_mm_srli_si128(lo, 8))));
        _mm256_storeu_ps(dst + 16, _mm256_mul_ps(d, w8(hi)));
        _mm256_storeu_ps(dst + 24, _mm256_mul_ps(d, w8(_mm_srli_si128(hi, 8))));
      }
      return true;
    case TensorType::kQ8_0:
      for (int64_t b = 0; b < n / 32; ++b, src += 34, dst += 32) {
        uint16_t dh;
        std::memcpy(&dh, src, 2);
        const __m256 d = _mm256_set1_ps(F16ToF32(dh));
        for (int j = 0; j < 32; j += 8) {
          __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + 2 + j));
          _mm256_storeu_ps(dst + j, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
        }
      }
      return true;
    default:
      return false;
  }
}
#endif

}  // namespace

void DequantizeRow(TensorType t, const void* src_v, float* dst, int64_t n) {
  const uint8_t* src = static_cast<const uint8_t*>(src_v);
  CANOPY_CHECK_EQ(n % TensorTypeBlockSize(t), 0);
#if defined(__AVX2__) && defined(__F16C__)
  if (DequantizeRowAvx2(t, src, dst, n)) return;
#endif
  DequantizeRowPortable(t, src, dst, n);
}

void DequantizeRowPortable(TensorType t, const void* src_v, float* dst, int64_t n) {
  const uint8_t* src = static_cast<const uint8_t*>(src_v);
  switch (t) {
    case TensorType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case TensorType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = F16ToF32(h);
      }
      return;
    case TensorType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = Bf16ToF32(h);
      }
      return;
    case TensorType::kQ4_0:
      for (int64_t b = 0; b < n / 32; ++b, src += 18, dst += 32) {
        uint16_t dh;
        std::memcpy(&dh, src, 2);
        float d = F16ToF32(dh);
        for (int j = 0; j < 16; ++j) {
          dst[j] = d * (static_cast<int>(src[2 + j] & 0x0f) - 8);
          dst[j + 16] = d * (static_cast<int>(src[2 + j] >> 4) - 8);
        }
      }
      return;
    case TensorType::kQ4_1:
      for (int64_t b = 0; b < n / 32; ++b, src += 20, dst += 32) {
        uint16_t dh, mh;
        std::memcpy(&dh, src, 2);
        std::memcpy(&mh, src + 2, 2);
        float d = F16ToF32(dh), m = F16ToF32(mh);
        for (int j = 0; j < 16; ++j) {
          dst[j] = d * (src[4 + j] & 0x0f) + m;
          dst[j + 16] = d * (src[4 + j] >> 4) + m;
        }
      }
      return;
    case TensorType::kQ8_0:
      for (int64_t b = 0; b < n / 32; ++b, src += 34, dst += 32) {
        uint16_t dh;
        std::memcpy(&dh, src, 2);
        float d = F16ToF32(dh);
        for (int j = 0; j < 32; ++j) dst[j] = d * static_cast<int8_t>(src[2 + j]);
      }
      return;
  }
}

}  // namespace canopy
