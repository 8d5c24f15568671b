//! G.711 mu-law, the audio encoding of Twilio Media Streams (8 kHz, mono, one byte a sample).

/// Samples in one 20 ms media frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// Duration of one media frame in milliseconds.
pub const FRAME_MS: u64 = 20;
/// The sample rate of Media Streams audio.
pub const SAMPLE_RATE: u32 = 8000;

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Encodes one 16-bit linear PCM sample as mu-law.
pub fn encode(sample: i16) -> u8 {
    let mut magnitude = i32::from(sample);
    let sign = if magnitude < 0 {
        magnitude = -magnitude;
        0x80
    } else {
        0
    };
    let biased = magnitude.min(CLIP) + BIAS;
    // The exponent is the position of the highest set bit above the 7 low bits (0..=7).
    let exponent = 7 - ((biased >> 7) as u8 | 1).leading_zeros() as i32;
    let mantissa = (biased >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// Decodes one mu-law byte to a 16-bit linear PCM sample.
pub fn decode(byte: u8) -> i16 {
    let byte = !byte;
    let exponent = (byte >> 4) & 0x07;
    let mantissa = i16::from(byte & 0x0F);
    let magnitude = (((mantissa << 3) + BIAS as i16) << exponent) - BIAS as i16;
    if byte & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// Encodes PCM samples as mu-law bytes.
pub fn encode_all(samples: &[i16]) -> Vec<u8> {
    samples.iter().copied().map(encode).collect()
}

/// Decodes mu-law bytes to PCM samples.
pub fn decode_all(bytes: &[u8]) -> Vec<i16> {
    bytes.iter().copied().map(decode).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(decode(0xFF), 0);
        assert_eq!(decode(0x7F), 0);
        assert_eq!(decode(0x00), -32124);
        assert_eq!(decode(0x80), 32124);
        assert_eq!(decode(0xFE), 8);
        assert_eq!(decode(0x7E), -8);
        assert_eq!(encode(0), 0xFF);
        assert_eq!(encode(i16::MAX), 0x80);
        assert_eq!(encode(i16::MIN), 0x00);
        assert_eq!(encode(-32124), 0x00);
        assert_eq!(encode(8), 0xFE);
        assert_eq!(encode(-8), 0x7E);
    }

    #[test]
    fn every_code_round_trips_except_negative_zero() {
        for byte in 0..=255u8 {
            let expected = if byte == 0x7F { 0xFF } else { byte };
            assert_eq!(encode(decode(byte)), expected, "code {byte:#04x}");
        }
    }

    #[test]
    fn encoding_is_monotonic_and_close() {
        let mut previous = decode(encode(i16::MIN));
        for sample in (i16::MIN..=i16::MAX).step_by(7) {
            let back = decode(encode(sample));
            assert!(back >= previous, "{sample}: {back} < {previous}");
            previous = back;
            // The quantisation step grows with the magnitude: at most 1/16 of it, plus clipping.
            let error = (i32::from(back) - i32::from(sample)).abs();
            let allowed =
                (i32::from(sample).abs() / 16).max(8) + if sample.unsigned_abs() > 32124 { 700 } else { 0 };
            assert!(error <= allowed, "{sample} -> {back}");
        }
    }

    #[test]
    fn slices() {
        let pcm = [0i16, 1000, -1000, 32000];
        let ulaw = encode_all(&pcm);
        assert_eq!(ulaw.len(), 4);
        assert_eq!(decode_all(&ulaw)[0], 0);
    }
}
