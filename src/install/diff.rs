//! A small line diff for `--dry-run` (unified-style hunks with 3 lines of context).

/// The unified diff from `old` to `new`, labelled `path`; empty when they are equal.
pub fn unified(old: &str, new: &str, path: &str) -> String {
    if old == new {
        return String::new();
    }
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    // Common prefix and suffix first: install appends and uninstall cuts one block, so what is
    // left in the middle is small. The middle gets a plain LCS table, bounded in size.
    let pre = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[pre..a.len() - suf], &b[pre..b.len() - suf]);
    let mut ops: Vec<(char, &str)> = a[..pre].iter().map(|l| (' ', *l)).collect();
    if am.len().saturating_mul(bm.len()) <= 4_000_000 {
        let (n, m) = (am.len(), bm.len());
        let mut t = vec![0u32; (n + 1) * (m + 1)];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                t[i * (m + 1) + j] = if am[i] == bm[j] {
                    t[(i + 1) * (m + 1) + j + 1] + 1
                } else {
                    t[(i + 1) * (m + 1) + j].max(t[i * (m + 1) + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && am[i] == bm[j] {
                ops.push((' ', am[i]));
                i += 1;
                j += 1;
            } else if j < m && (i == n || t[i * (m + 1) + j + 1] >= t[(i + 1) * (m + 1) + j]) {
                ops.push(('+', bm[j]));
                j += 1;
            } else {
                ops.push(('-', am[i]));
                i += 1;
            }
        }
    } else {
        ops.extend(am.iter().map(|l| ('-', *l)));
        ops.extend(bm.iter().map(|l| ('+', *l)));
    }
    ops.extend(a[a.len() - suf..].iter().map(|l| (' ', *l)));

    let mut out = format!("--- {path}\n+++ {path} (after)\n");
    const CONTEXT: usize = 3;
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(CONTEXT);
        let mut end = changed[k];
        while k < changed.len() && changed[k] <= end + 2 * CONTEXT + 1 {
            end = changed[k];
            k += 1;
        }
        let end = (end + CONTEXT + 1).min(ops.len());
        let old_start = ops[..start].iter().filter(|o| o.0 != '+').count() + 1;
        let new_start = ops[..start].iter().filter(|o| o.0 != '-').count() + 1;
        let old_len = ops[start..end].iter().filter(|o| o.0 != '+').count();
        let new_len = ops[start..end].iter().filter(|o| o.0 != '-').count();
        out.push_str(&format!(
            "@@ -{old_start},{old_len} +{new_start},{new_len} @@\n"
        ));
        for (c, l) in &ops[start..end] {
            out.push(*c);
            out.push_str(l);
            if !l.ends_with('\n') {
                out.push_str("\n\\ No newline at end of file\n");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unified;

    #[test]
    fn hunk_headers_count_the_lines_they_show() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..500 {
            let mut gen = || -> String {
                let n = next() % 30;
                (0..n)
                    .map(|_| ["a\n", "b\n", "c\n", "d", "\n"][(next() % 5) as usize])
                    .collect()
            };
            let (old, new) = (gen(), gen());
            let d = unified(&old, &new, "f");
            for hunk in d.split("\n@@ ").skip(1) {
                let header = hunk.split(" @@").next().unwrap_or_default();
                let nums: Vec<usize> = header
                    .split([' ', ',', '-', '+'])
                    .filter_map(|x| x.parse().ok())
                    .collect();
                assert_eq!(nums.len(), 4, "{header}\n{d}");
                let body: Vec<&str> = hunk
                    .lines()
                    .skip(1)
                    .take_while(|l| !l.starts_with("@@"))
                    .filter(|l| !l.starts_with('\\'))
                    .collect();
                let old_n = body.iter().filter(|l| !l.starts_with('+')).count();
                let new_n = body.iter().filter(|l| !l.starts_with('-')).count();
                assert_eq!((old_n, new_n), (nums[1], nums[3]), "{d}");
            }
        }
    }

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified("a\nb\n", "a\nb\n", "f"), "");
    }

    #[test]
    fn appended_lines_are_one_hunk_with_context() {
        let d = unified("1\n2\n3\n4\n5\n", "1\n2\n3\n4\n5\nx\ny\n", "f");
        assert_eq!(
            d,
            "--- f\n+++ f (after)\n@@ -3,3 +3,5 @@\n 3\n 4\n 5\n+x\n+y\n"
        );
    }

    #[test]
    fn removed_and_changed_lines() {
        let d = unified("a\nb\nc\n", "a\nc\nd", "f");
        assert!(d.contains("-b\n"), "{d}");
        assert!(d.contains("+d\n\\ No newline at end of file\n"), "{d}");
        assert!(d.contains(" a\n"), "{d}");
    }
}
