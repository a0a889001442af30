//! Ports of transformers' `audio_utils.py`: `window_function("hann")`, `mel_filter_bank` and the
//! power `spectrogram` (centred frames, reflect padding), in f64.

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

/// The mel scales of `hertz_to_mel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MelScale {
    Htk,
    Slaney,
    Kaldi,
}

pub fn hertz_to_mel(freq: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 2595.0 * (1.0 + freq / 700.0).log10(),
        MelScale::Kaldi => 1127.0 * (1.0 + freq / 700.0).ln(),
        MelScale::Slaney => {
            let (min_log_hertz, min_log_mel) = (1000.0, 15.0);
            let logstep = 27.0 / 6.4f64.ln();
            if freq >= min_log_hertz {
                min_log_mel + (freq / min_log_hertz).ln() * logstep
            } else {
                3.0 * freq / 200.0
            }
        }
    }
}

pub fn mel_to_hertz(mels: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 700.0 * (10f64.powf(mels / 2595.0) - 1.0),
        MelScale::Kaldi => 700.0 * ((mels / 1127.0).exp() - 1.0),
        MelScale::Slaney => {
            let (min_log_hertz, min_log_mel) = (1000.0, 15.0);
            let logstep = 6.4f64.ln() / 27.0;
            if mels >= min_log_mel {
                min_log_hertz * (logstep * (mels - min_log_mel)).exp()
            } else {
                200.0 * mels / 3.0
            }
        }
    }
}

/// `np.linspace(start, stop, n)`.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (stop - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
    if let Some(last) = v.last_mut() {
        *last = stop;
    }
    v
}

/// `mel_filter_bank(num_frequency_bins, num_mel_filters, min_frequency, max_frequency,
/// sampling_rate, norm, mel_scale)` (triangles in Hz): row-major (num_frequency_bins, num_mel_filters).
pub fn mel_filter_bank(
    num_frequency_bins: usize,
    num_mel_filters: usize,
    min_frequency: f64,
    max_frequency: f64,
    sampling_rate: u32,
    slaney_norm: bool,
    scale: MelScale,
) -> Vec<f64> {
    let mel_min = hertz_to_mel(min_frequency, scale);
    let mel_max = hertz_to_mel(max_frequency, scale);
    let filter_freqs: Vec<f64> = linspace(mel_min, mel_max, num_mel_filters + 2)
        .into_iter()
        .map(|m| mel_to_hertz(m, scale))
        .collect();
    // np.linspace(0, sampling_rate // 2, num_frequency_bins)
    let fft_freqs = linspace(0.0, (sampling_rate / 2) as f64, num_frequency_bins);
    let mut out = vec![0.0; num_frequency_bins * num_mel_filters];
    for (f, &ff) in fft_freqs.iter().enumerate() {
        for m in 0..num_mel_filters {
            // _create_triangular_filter_bank
            let down = -(filter_freqs[m] - ff) / (filter_freqs[m + 1] - filter_freqs[m]);
            let up = (filter_freqs[m + 2] - ff) / (filter_freqs[m + 2] - filter_freqs[m + 1]);
            let mut w = down.min(up).max(0.0);
            if slaney_norm {
                w *= 2.0 / (filter_freqs[m + 2] - filter_freqs[m]);
            }
            out[f * num_mel_filters + m] = w;
        }
    }
    out
}

/// `window_function(n, "hann")`: the periodic Hann window.
pub fn hann_window(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos())
        .collect()
}

/// `np.pad(x, (pad, pad), mode="reflect")`, reflecting as often as needed.
fn reflect_pad(x: &[f64], pad: usize) -> Vec<f64> {
    let n = x.len() as i64;
    let at = |i: i64| -> f64 {
        if n == 1 {
            return x[0];
        }
        let period = 2 * (n - 1);
        let mut j = i.rem_euclid(period);
        if j >= n {
            j = period - j;
        }
        x[j as usize]
    };
    (-(pad as i64)..n + pad as i64).map(at).collect()
}

/// A power spectrogram, `spectrogram(waveform, hann, frame_length=n_fft, hop_length, power=2.0,
/// center=True, pad_mode="reflect")` before the mel filters: row-major (frames, n_fft / 2 + 1).
pub fn power_spectrogram(waveform: &[f64], n_fft: usize, hop_length: usize) -> (usize, Vec<f64>) {
    let padded = reflect_pad(waveform, n_fft / 2);
    let window = hann_window(n_fft);
    let num_frames = if padded.len() >= n_fft {
        1 + (padded.len() - n_fft) / hop_length
    } else {
        0
    };
    let bins = n_fft / 2 + 1;
    let fft = FftPlanner::<f64>::new().plan_fft_forward(n_fft);
    let mut buffer = vec![Complex::new(0.0, 0.0); n_fft];
    let mut scratch = vec![Complex::new(0.0, 0.0); fft.get_inplace_scratch_len()];
    let mut out = Vec::with_capacity(num_frames * bins);
    for t in 0..num_frames {
        let frame = &padded[t * hop_length..t * hop_length + n_fft];
        for ((b, &x), &w) in buffer.iter_mut().zip(frame).zip(&window) {
            *b = Complex::new(x * w, 0.0);
        }
        fft.process_with_scratch(&mut buffer, &mut scratch);
        out.extend(buffer[..bins].iter().map(|c| c.norm_sqr()));
    }
    (num_frames, out)
}

/// The mel spectrogram `max(mel_floor, filters^T @ power)`: row-major (frames, n_mels).
pub fn mel_spectrogram(power: &[f64], frames: usize, filters: &[f64], n_mels: usize, mel_floor: f64) -> Vec<f64> {
    let bins = filters.len() / n_mels.max(1);
    let mut out = vec![0.0; frames * n_mels];
    for t in 0..frames {
        let p = &power[t * bins..(t + 1) * bins];
        let o = &mut out[t * n_mels..(t + 1) * n_mels];
        for (f, &pf) in p.iter().enumerate() {
            if pf == 0.0 {
                continue;
            }
            for (m, om) in o.iter_mut().enumerate() {
                *om += filters[f * n_mels + m] * pf;
            }
        }
        for v in o.iter_mut() {
            *v = v.max(mel_floor);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_pad_matches_numpy() {
        // np.pad([1, 2, 3], (2, 2), mode="reflect") == [3, 2, 1, 2, 3, 2, 1]
        assert_eq!(
            reflect_pad(&[1.0, 2.0, 3.0], 2),
            vec![3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]
        );
        // np.pad([1, 2], (3, 3), mode="reflect") == [2, 1, 2, 1, 2, 1, 2, 1]
        assert_eq!(
            reflect_pad(&[1.0, 2.0], 3),
            vec![2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0]
        );
    }

    #[test]
    fn slaney_scale_round_trips() {
        for f in [0.0, 440.0, 999.0, 1000.0, 4000.0, 8000.0] {
            for s in [MelScale::Htk, MelScale::Slaney, MelScale::Kaldi] {
                let back = mel_to_hertz(hertz_to_mel(f, s), s);
                assert!((back - f).abs() < 1e-9, "{f} {s:?} {back}");
            }
        }
    }
}
