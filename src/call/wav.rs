//! WAV files of a test call: the caller's audio in (8 kHz mono, 16-bit PCM or mu-law) and the
//! recording of what the agent played (8 kHz mono 16-bit PCM).
//!
//! PCM goes through `hound`. hound reads no mu-law (format tag 7), so for that one format the
//! `fmt ` and `data` chunks are found by walking the RIFF chunk list here.
use std::path::Path;

use crate::twilio::audio::{self, SAMPLE_RATE};

/// The built-in caller audio: 6.4 s of real speech, 8 kHz mu-law, as Twilio streamed it (the
/// 319 `media` payloads of `tests/fixtures/media-stream-session.jsonl`).
pub const BUILTIN_SPEECH: &[u8] = include_bytes!("speech.ulaw");

const FORMAT_PCM: u16 = 1;
const FORMAT_MULAW: u16 = 7;
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// Why a WAV file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a WAV file: {0}")]
    NotWav(String),
    #[error(
        "{0}: the call audio must be 8000 Hz mono, 16-bit PCM or 8-bit mu-law \
         (convert with e.g. `sox in.wav -r 8000 -c 1 -b 16 -e signed-integer out.wav`)"
    )]
    Unsupported(String),
    #[error("writing the recording: {0}")]
    Write(String),
}

/// Reads the caller's audio from a WAV file, as mu-law bytes.
pub fn read(path: &Path) -> Result<Vec<u8>, WavError> {
    let bytes = std::fs::read(path).map_err(|source| WavError::Io {
        path: path.display().to_string(),
        source,
    })?;
    read_bytes(&bytes)
}

/// Reads the caller's audio from the bytes of a WAV file, as mu-law bytes.
pub fn read_bytes(bytes: &[u8]) -> Result<Vec<u8>, WavError> {
    let chunks = riff_chunks(bytes)?;
    let fmt = chunks
        .iter()
        .find(|(id, _)| id == b"fmt ")
        .map(|(_, body)| Fmt::parse(body))
        .ok_or_else(|| WavError::NotWav("no fmt chunk".to_owned()))??;
    match fmt.tag {
        FORMAT_MULAW => {
            if fmt.channels != 1 || fmt.sample_rate != SAMPLE_RATE || fmt.bits != 8 {
                return Err(WavError::Unsupported(fmt.describe()));
            }
            let data = chunks
                .iter()
                .find(|(id, _)| id == b"data")
                .map(|(_, body)| body.to_vec())
                .ok_or_else(|| WavError::NotWav("no data chunk".to_owned()))?;
            Ok(data)
        }
        FORMAT_PCM => {
            if fmt.channels != 1 || fmt.sample_rate != SAMPLE_RATE || fmt.bits != 16 {
                return Err(WavError::Unsupported(fmt.describe()));
            }
            let reader = hound::WavReader::new(bytes).map_err(|e| WavError::NotWav(e.to_string()))?;
            let samples = reader
                .into_samples::<i16>()
                .collect::<Result<Vec<i16>, _>>()
                .map_err(|e| WavError::NotWav(e.to_string()))?;
            Ok(audio::encode_all(&samples))
        }
        _ => Err(WavError::Unsupported(fmt.describe())),
    }
}

/// Writes 8 kHz mono 16-bit PCM samples as a WAV file.
pub fn write_pcm(path: &Path, samples: &[i16]) -> Result<(), WavError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let write = || -> Result<(), hound::Error> {
        let mut writer = hound::WavWriter::create(path, spec)?;
        let mut samples_writer = writer.get_i16_writer(samples.len() as u32);
        for &s in samples {
            samples_writer.write_sample(s);
        }
        samples_writer.flush()?;
        writer.finalize()
    };
    write().map_err(|e| WavError::Write(format!("{}: {e}", path.display())))
}

/// The `fmt ` chunk fields that decide whether a file is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fmt {
    /// The format tag (for WAVE_FORMAT_EXTENSIBLE, the sub-format's).
    tag: u16,
    channels: u16,
    sample_rate: u32,
    bits: u16,
}

impl Fmt {
    fn parse(body: &[u8]) -> Result<Self, WavError> {
        if body.len() < 16 {
            return Err(WavError::NotWav("fmt chunk too short".to_owned()));
        }
        let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
        let mut tag = u16_at(0);
        if tag == FORMAT_EXTENSIBLE && body.len() >= 40 {
            // The sub-format GUID starts with the plain format tag.
            tag = u16_at(24);
        }
        Ok(Self {
            tag,
            channels: u16_at(2),
            sample_rate: u32::from_le_bytes([body[4], body[5], body[6], body[7]]),
            bits: u16_at(14),
        })
    }

    fn describe(&self) -> String {
        let encoding = match self.tag {
            FORMAT_PCM => "PCM".to_owned(),
            FORMAT_MULAW => "mu-law".to_owned(),
            3 => "float".to_owned(),
            6 => "a-law".to_owned(),
            other => format!("format tag {other}"),
        };
        let channels = match self.channels {
            1 => "mono".to_owned(),
            2 => "stereo".to_owned(),
            n => format!("{n} channels"),
        };
        format!("{} Hz {channels} {}-bit {encoding}", self.sample_rate, self.bits)
    }
}

/// A RIFF chunk: its four-byte id and its body.
type Chunk<'a> = ([u8; 4], &'a [u8]);

/// The chunks of a RIFF/WAVE file as (id, body). A last chunk cut short (a recorder that
/// stopped before fixing the sizes) keeps the bytes present.
fn riff_chunks(bytes: &[u8]) -> Result<Vec<Chunk<'_>>, WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWav("no RIFF/WAVE header".to_owned()));
    }
    let mut chunks = Vec::new();
    let mut offset = 12usize;
    while offset + 8 <= bytes.len() {
        let id: [u8; 4] = bytes[offset..offset + 4].try_into().expect("four bytes");
        let size = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().expect("four bytes")) as usize;
        let start = offset + 8;
        let end = start.saturating_add(size).min(bytes.len());
        chunks.push((id, &bytes[start..end]));
        // Chunks are padded to an even length.
        offset = start.saturating_add(size).saturating_add(size & 1);
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcm_wav(spec: hound::WavSpec, samples: &[i16]) -> Vec<u8> {
        let mut cursor = std::io::Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
        for &s in samples {
            writer.write_sample(s).unwrap();
        }
        writer.finalize().unwrap();
        cursor.into_inner()
    }

    fn spec(channels: u16, sample_rate: u32) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        }
    }

    /// A mu-law WAV as sox and Windows write it: 18-byte fmt chunk, a `fact` chunk, odd data.
    fn mulaw_wav(sample_rate: u32, channels: u16, data: &[u8]) -> Vec<u8> {
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&FORMAT_MULAW.to_le_bytes());
        fmt.extend_from_slice(&channels.to_le_bytes());
        fmt.extend_from_slice(&sample_rate.to_le_bytes());
        fmt.extend_from_slice(&(sample_rate * u32::from(channels)).to_le_bytes());
        fmt.extend_from_slice(&channels.to_le_bytes());
        fmt.extend_from_slice(&8u16.to_le_bytes());
        fmt.extend_from_slice(&0u16.to_le_bytes());
        let mut body = b"WAVE".to_vec();
        for (id, chunk) in [
            (b"fmt ", fmt.as_slice()),
            (b"fact", &(data.len() as u32).to_le_bytes()[..]),
            (b"data", data),
        ] {
            body.extend_from_slice(id);
            body.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            body.extend_from_slice(chunk);
            if chunk.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut file = b"RIFF".to_vec();
        file.extend_from_slice(&(body.len() as u32).to_le_bytes());
        file.extend_from_slice(&body);
        file
    }

    #[test]
    fn reads_8khz_mono_pcm_as_mulaw() {
        let samples = [0i16, 1000, -1000, 32000, -32000];
        let ulaw = read_bytes(&pcm_wav(spec(1, 8000), &samples)).unwrap();
        assert_eq!(ulaw, audio::encode_all(&samples));
    }

    #[test]
    fn reads_8khz_mono_mulaw_as_is() {
        let data = [0xFFu8, 0x00, 0x80, 0x12, 0x34];
        assert_eq!(read_bytes(&mulaw_wav(8000, 1, &data)).unwrap(), data);
    }

    #[test]
    fn rejects_other_rates_channels_and_encodings() {
        for (bytes, expected) in [
            (pcm_wav(spec(1, 44100), &[0; 10]), "44100 Hz mono 16-bit PCM"),
            (pcm_wav(spec(2, 8000), &[0; 10]), "8000 Hz stereo 16-bit PCM"),
            (mulaw_wav(16000, 1, &[0xFF; 4]), "16000 Hz mono 8-bit mu-law"),
            (mulaw_wav(8000, 2, &[0xFF; 4]), "8000 Hz stereo 8-bit mu-law"),
            (
                pcm_wav(
                    hound::WavSpec {
                        channels: 1,
                        sample_rate: 8000,
                        bits_per_sample: 32,
                        sample_format: hound::SampleFormat::Float,
                    },
                    &[],
                ),
                "8000 Hz mono 32-bit float",
            ),
        ] {
            match read_bytes(&bytes) {
                Err(e @ WavError::Unsupported(_)) => {
                    let message = e.to_string();
                    assert!(message.starts_with(expected), "{message}");
                    assert!(message.contains("must be 8000 Hz mono"), "{message}");
                }
                other => panic!("{expected}: {other:?}"),
            }
        }
        assert!(matches!(
            read_bytes(b"RIFF\0\0\0\0AVI "),
            Err(WavError::NotWav(_))
        ));
        assert!(matches!(read_bytes(b"hello"), Err(WavError::NotWav(_))));
        assert!(matches!(
            read_bytes(b"RIFF\x04\0\0\0WAVE"),
            Err(WavError::NotWav(_))
        ));
    }

    #[test]
    fn recording_round_trips() {
        let dir = tempfile_dir();
        let path = dir.join("out.wav");
        let samples: Vec<i16> = (0..400).map(|i| (i * 37 % 2000 - 1000) as i16).collect();
        write_pcm(&path, &samples).unwrap();
        let reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.spec(), spec(1, 8000));
        let back: Vec<i16> = reader.into_samples().map(Result::unwrap).collect();
        assert_eq!(back, samples);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("voice-wav-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn builtin_speech_is_the_recorded_session() {
        assert_eq!(BUILTIN_SPEECH.len(), 319 * audio::FRAME_SAMPLES);
        // Real speech, not silence: a good share of samples is loud.
        let loud = audio::decode_all(BUILTIN_SPEECH)
            .iter()
            .filter(|s| s.unsigned_abs() > 1000)
            .count();
        assert!(loud > BUILTIN_SPEECH.len() / 20, "{loud}");
    }
}
