//! The dense linear algebra of monitoring, on row-major `f64` slices: the Cholesky factor and
//! inverse factor behind the outlier distance, its centred dot product, and the square matrix
//! product of the Durbin matrix in the KS distribution. No allocation beyond the results.

/// Lower Cholesky factor (row-major p×p) of `a + ridge·I`, or `None` if a pivot is not clearly
/// positive (at most 1e-12 of its diagonal entry) or not finite.
pub fn cholesky(a: &[f64], p: usize, ridge: f64) -> Option<Vec<f64>> {
    let mut l = vec![0.0; p * p];
    for i in 0..p {
        for j in 0..=i {
            let mut sum = *a.get(i * p + j)?;
            if i == j {
                sum += ridge;
            }
            let (row_i, row_j) = (l.get(i * p..i * p + j)?, l.get(j * p..j * p + j)?);
            sum -= row_i.iter().zip(row_j).map(|(x, y)| x * y).sum::<f64>();
            let value = if i == j {
                let diagonal = a.get(i * p + i)? + ridge;
                if !sum.is_finite() || sum <= 1e-12 * diagonal.max(f64::MIN_POSITIVE) {
                    return None;
                }
                sum.sqrt()
            } else {
                sum / l.get(j * p + j)?
            };
            *l.get_mut(i * p + j)? = value;
        }
    }
    Some(l)
}

/// `W = L⁻¹·diag(1/scale)` for a lower-triangular `L` (row-major p×p), packed by rows.
pub fn inverse_factor(l: &[f64], p: usize, scale: &[f64]) -> Vec<f64> {
    // Column j of V = L⁻¹ by forward substitution:
    // V[i][j] = (δᵢⱼ − Σ_{j≤k<i} L[i][k]·V[k][j]) / L[i][i].
    let mut inverse = vec![0.0; p * p];
    for j in 0..p {
        for i in j..p {
            let mut sum = if i == j { 1.0 } else { 0.0 };
            for k in j..i {
                sum -= l.get(i * p + k).copied().unwrap_or(0.0)
                    * inverse.get(k * p + j).copied().unwrap_or(0.0);
            }
            let pivot = l.get(i * p + i).copied().unwrap_or(1.0);
            if let Some(cell) = inverse.get_mut(i * p + j) {
                *cell = sum / pivot;
            }
        }
    }
    let mut packed = Vec::with_capacity(p * (p + 1) / 2);
    for i in 0..p {
        for j in 0..=i {
            let value = inverse.get(i * p + j).copied().unwrap_or(0.0);
            packed.push(value / scale.get(j).copied().unwrap_or(1.0));
        }
    }
    packed
}

/// `Σ wⱼ·(xⱼ − mⱼ)` over equally long slices, four accumulators to break the dependency chain.
pub fn dot_centred(w: &[f64], x: &[f64], m: &[f64]) -> f64 {
    let (w4, w_rest) = w.as_chunks::<4>();
    let (x4, x_rest) = x.as_chunks::<4>();
    let (m4, m_rest) = m.as_chunks::<4>();
    let mut sums = [0.0_f64; 4];
    for ((w, x), m) in w4.iter().zip(x4).zip(m4) {
        for (((s, w), x), m) in sums.iter_mut().zip(w).zip(x).zip(m) {
            *s += w * (x - m);
        }
    }
    let tail: f64 = w_rest
        .iter()
        .zip(x_rest)
        .zip(m_rest)
        .map(|((w, x), m)| w * (x - m))
        .sum();
    (sums[0] + sums[1]) + (sums[2] + sums[3]) + tail
}

/// `out = a · b` for m × m row-major matrices.
pub fn mat_mul(a: &[f64], b: &[f64], out: &mut [f64], m: usize) {
    out.fill(0.0);
    for (a_row, out_row) in a.chunks_exact(m).zip(out.chunks_exact_mut(m)) {
        for (&aik, b_row) in a_row.iter().zip(b.chunks_exact(m)) {
            if aik == 0.0 {
                continue;
            }
            for (o, &bkj) in out_row.iter_mut().zip(b_row) {
                *o += aik * bkj;
            }
        }
    }
}
