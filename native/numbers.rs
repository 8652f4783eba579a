//! Dense numeric request bodies into a column-major float64 matrix, and big JSON answers laid out, for
//! shared/native_numbers.py (through ctypes: plain C functions, no Python API).
//!
//! Two readers: CSV data lines (`1.5,2,,3\n`: an empty cell is a missing value, NaN) and the rows array of
//! a JSON dataframe_split body (`[[1.5,2],[3,4]]`, JSON blanks allowed between tokens). Each accepts only a
//! strict subset that the app's other readers (pyarrow's CSV reader, simdjson, the stdlib) read the same
//! way: numbers in JSON's grammar, finite in float64, at most 100 bytes, integers of at most 18 digits;
//! rows of exactly `ncols` cells; exactly `nrows` rows. Anything else answers UNSUPPORTED and the caller's
//! general path decides, with its messages. Numbers are correctly rounded (Clinger's exact case, else the
//! standard library's parser), as pyarrow's and simdjson's are, so every path gives the same bits.
//!
//! A part is first read with simple_number alone (no exponent, at most 19 digits, a mantissa up to 2^53: a loop
//! with no call in it, ~25% faster here); a number outside that case reads the part again with any_number.
//! CSV is read 16 and 64 bytes at a time where the CPU has SSSE3 and SSE4.1 (mod wide, the same answers).
//! Big inputs are cut at a row boundary and their halves read on two threads (ctypes releases the GIL).
//! Besides: a byte count (the readers' callers size the matrix with it) and mlops_lay_out, which lays out
//! big answers (a classifier's per-class JSON objects, CSV results lines) from orjson's text of each column.
//! No crates: `rustc` alone builds it (native/build.py).

use std::thread;

const UNSUPPORTED: i64 = -1;
const MAX_TOKEN: usize = 100;
const MAX_INT_DIGITS: usize = 18;
/// Below this many bytes a second thread costs more than it saves.
const SPLIT_MIN_BYTES: usize = 256 * 1024;
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
    1e19, 1e20, 1e21, 1e22,
];

/// Why a part was not read.
enum Refused {
    /// Not in the accepted subset: the caller's general path decides.
    Unsupported,
    /// A number simple_number does not read: read the part again with any_number.
    NotSimple,
}

/// Where one part's rows go: rows row0..row0 + rows of a column-major [ncols][nrows] matrix.
#[derive(Clone, Copy)]
struct Columns {
    ptr: *mut f64,
    nrows: usize,
    ncols: usize,
    row0: usize,
    rows: usize,
}

// Parts write disjoint rows of one buffer, so each may run on its own thread.
unsafe impl Send for Columns {}

impl Columns {
    /// Stores a cell of this part's rows (row counts from the buffer's first row). Through a raw pointer:
    /// parts running side by side must not each hold a `&mut` slice of the one buffer.
    #[inline(always)]
    fn set(&self, col: usize, row: usize, value: f64) {
        let end = self.row0 + self.rows;
        assert!(col < self.ncols && row >= self.row0 && row < end && end <= self.nrows);
        // SAFETY: in bounds of the ncols * nrows buffer (the entry points' contract, checked above), and no
        // other part writes this row.
        unsafe { self.ptr.add(col * self.nrows + row).write(value) }
    }
}

/// simple_number when SIMPLE, else any_number (a const parameter, so that each loop inlines its own).
#[inline(always)]
fn number<const SIMPLE: bool>(b: &[u8], start: usize) -> Result<(f64, usize), Refused> {
    if SIMPLE { simple_number(b, start) } else { any_number(b, start) }
}

/// A number without exponent, of at most 19 digits whose mantissa is at most 2^53, in one pass over its digits;
/// NotSimple for anything else (which may still be a number: any_number decides).
#[inline(always)]
fn simple_number(b: &[u8], start: usize) -> Result<(f64, usize), Refused> {
    let end = b.len();
    let mut i = start;
    let negative = i < end && b[i] == b'-';
    i += usize::from(negative);
    let int_start = i;
    let mut mantissa: u64 = 0;
    while i < end && b[i].wrapping_sub(b'0') < 10 {
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(b[i] - b'0'));
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0usize;
    let mut point = false;
    if i < end && b[i] == b'.' {
        point = true;
        i += 1;
        let frac_start = i;
        while i < end && b[i].wrapping_sub(b'0') < 10 {
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(b[i] - b'0'));
            i += 1;
        }
        frac_digits = i - frac_start;
    }
    let simple = int_digits > 0 && (int_digits == 1 || b[int_start] != b'0') && (frac_digits > 0 || !point)
        && int_digits + frac_digits <= 19 && mantissa <= 1 << 53 && !(i < end && (b[i] == b'e' || b[i] == b'E'));
    if !simple {
        return Err(Refused::NotSimple);
    }
    // Clinger: at most 19 digits never wrap the u64; a mantissa up to 2^53 and 10^frac_digits (frac_digits at
    // most 19) are exact doubles, so one IEEE division rounds correctly.
    let v = mantissa as f64 / POW10[frac_digits];
    Ok((if negative { -v } else { v }, i))
}

/// The number in JSON's grammar that starts at b[start], and where it ends; Unsupported when b[start..]
/// starts no such number, or it is too long, an integer of too many digits, or not finite in float64.
#[inline(never)]
fn any_number(b: &[u8], start: usize) -> Result<(f64, usize), Refused> {
    let digits_from = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut i = start;
    if i < b.len() && b[i] == b'-' {
        i += 1;
    }
    let int_start = i;
    i = digits_from(i);
    let int_digits = i - int_start;
    if int_digits == 0 || (int_digits > 1 && b[int_start] == b'0') {
        return Err(Refused::Unsupported); // JSON refuses "", "-", "01"
    }
    let mut plain_int = true;
    if i < b.len() && b[i] == b'.' {
        plain_int = false;
        let frac_start = i + 1;
        i = digits_from(frac_start);
        if i == frac_start {
            return Err(Refused::Unsupported); // "1."
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        plain_int = false;
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        i = digits_from(i);
        if i == exp_start {
            return Err(Refused::Unsupported); // "1e"
        }
    }
    if i - start > MAX_TOKEN || (plain_int && int_digits > MAX_INT_DIGITS) {
        return Err(Refused::Unsupported); // what other readers take differently, or not at all
    }
    // JSON's number grammar is a subset of the standard library's, whose parse rounds correctly.
    let text = std::str::from_utf8(&b[start..i]).map_err(|_| Refused::Unsupported)?;
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok((value, i)),
        _ => Err(Refused::Unsupported),
    }
}

/// A part's answer from the reading with simple_number, or from the one with any_number when a number
/// needs it.
fn read_part<T>(simple: Result<T, Refused>, any: impl FnOnce() -> Result<T, Refused>) -> Option<T> {
    match simple {
        Ok(found) => Some(found),
        Err(Refused::NotSimple) => any().ok(),
        Err(Refused::Unsupported) => None,
    }
}

/// Reads both halves (cut at `cut`, the first holding `first_rows` rows) on two threads, or the whole on
/// this one when there is no cut; the sum of the halves' answers.
fn read_halves(
    text: &[u8], out: Columns, cut: Option<(usize, usize, usize)>,
    read: fn(&[u8], &Columns) -> Option<u64>,
) -> Option<u64> {
    match cut {
        Some((head_end, tail_start, first_rows)) if first_rows > 0 && first_rows < out.rows => {
            let first = Columns { rows: first_rows, ..out };
            let second = Columns { row0: out.row0 + first_rows, rows: out.rows - first_rows, ..out };
            let (head, tail) = (&text[..head_end], &text[tail_start..]);
            thread::scope(|s| {
                // no thread to be had (a host at its limit): this one reads both halves
                match thread::Builder::new().spawn_scoped(s, move || read(tail, &second)) {
                    Ok(other) => {
                        let mine = read(head, &first);
                        Some(mine? + other.join().ok()??)
                    }
                    Err(_) => Some(read(head, &first)? + read(tail, &second)?),
                }
            })
        }
        _ => read(text, &out),
    }
}

// ---------------------------------------------------------------------------------------------
// CSV

/// Rows of `text` (lines of exactly ncols cells, the last line with or without its newline) into `out`;
/// the count of empty cells.
fn csv_part<const SIMPLE: bool>(text: &[u8], out: &Columns) -> Result<u64, Refused> {
    let ncols = out.ncols;
    let len = text.len();
    let mut i = 0usize;
    let mut missing = 0u64;
    let last_row = out.row0 + out.rows;
    for row in out.row0..last_row {
        for col in 0..ncols {
            let value;
            if i >= len || matches!(text[i], b',' | b'\n' | b'\r') {
                if ncols == 1 {
                    return Err(Refused::Unsupported); // an empty line, which CSV readers skip
                }
                value = f64::NAN;
                missing += 1;
            } else {
                let (number, end) = number::<SIMPLE>(text, i)?;
                value = number;
                i = end;
            }
            out.set(col, row, value);
            if col + 1 < ncols {
                if i >= len || text[i] != b',' {
                    return Err(Refused::Unsupported);
                }
                i += 1;
            }
        }
        if i < len && text[i] == b'\r' {
            i += 1;
            if i >= len || text[i] != b'\n' {
                return Err(Refused::Unsupported);
            }
        }
        if i < len {
            if text[i] != b'\n' {
                return Err(Refused::Unsupported);
            }
            i += 1;
        } else if row + 1 < last_row {
            return Err(Refused::Unsupported); // fewer lines than rows
        }
    }
    if i == len { Ok(missing) } else { Err(Refused::Unsupported) }
}

fn csv_rows(text: &[u8], out: &Columns) -> Option<u64> {
    read_part(csv_part::<true>(text, out), || csv_part::<false>(text, out))
}

#[cfg(target_arch = "x86_64")]
fn wide_csv_rows(text: &[u8], out: &Columns) -> Option<u64> {
    // SAFETY: chosen by mlops_csv_f64 only where wide::available().
    read_part(unsafe { wide::csv_part(text, out) }, || csv_part::<false>(text, out))
}

/// csv_part::<true> 16 and 64 bytes at a time (SSSE3 and SSE4.1, which x86-64 CPUs of the last 15 years
/// have; checked at run time, so the build stays baseline x86-64). The byte loop spent its time on one chain:
/// each cell's end, found byte by byte, is where the next cell starts, and a digit run of unpredictable
/// length ends in a mispredicted branch. Here the stops (`,` `\n` `\r`) of 64 bytes at a time are found as
/// one bit mask apart from the cells, so the cells' reads do not wait on each other, and a cell's digits
/// are checked, its point found, its digits gathered (one shuffle) and summed (three multiply-adds) with no
/// branch on their count.
#[cfg(target_arch = "x86_64")]
mod wide {
    use super::{simple_number, Columns, Refused, POW10};
    use std::arch::x86_64::*;

    /// Bytes a cell's read takes from its start (one load: a sign is read with the digits).
    const REACH: usize = 16;
    const WINDOW: usize = 64;

    pub fn available() -> bool {
        is_x86_feature_detected!("ssse3") && is_x86_feature_detected!("sse4.1")
    }

    /// The stops of text, in order, then text.len() (the end of a last line without its newline), then none.
    struct Stops<'a> {
        text: &'a [u8],
        base: usize,
        bits: u64,
    }

    impl<'a> Stops<'a> {
        #[inline(always)]
        unsafe fn new(text: &'a [u8]) -> Stops<'a> {
            let mut stops = Stops { text, base: 0, bits: 0 };
            stops.bits = stops.window();
            stops
        }

        /// The stops of the window at base as bits; the last window (the one text.len() falls in) gets that
        /// bit too, read from a zero-padded copy.
        #[inline(always)]
        unsafe fn window(&self) -> u64 {
            let len = self.text.len();
            if self.base + WINDOW <= len {
                // SAFETY: WINDOW bytes from base are in text.
                return stops64(self.text.as_ptr().add(self.base));
            }
            let mut padded = [0u8; WINDOW];
            padded[..len - self.base].copy_from_slice(&self.text[self.base..]);
            stops64(padded.as_ptr()) | 1 << (len - self.base)
        }

        #[inline(always)]
        unsafe fn next(&mut self) -> Option<usize> {
            while self.bits == 0 {
                if self.base + WINDOW > self.text.len() {
                    return None; // past the end's stop
                }
                self.base += WINDOW;
                self.bits = self.window();
            }
            let at = self.base + self.bits.trailing_zeros() as usize;
            self.bits &= self.bits - 1;
            Some(at)
        }
    }

    #[inline(always)]
    unsafe fn stops64(at: *const u8) -> u64 {
        let (comma, newline, cr) = (_mm_set1_epi8(b',' as i8), _mm_set1_epi8(b'\n' as i8), _mm_set1_epi8(b'\r' as i8));
        let mut bits = 0u64;
        for k in 0..WINDOW / 16 {
            let bytes = _mm_loadu_si128(at.add(16 * k).cast());
            let found = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(bytes, comma), _mm_cmpeq_epi8(bytes, newline)),
                                     _mm_cmpeq_epi8(bytes, cr));
            bits |= u64::from(_mm_movemask_epi8(found) as u32) << (16 * k);
        }
        bits
    }

    /// csv_part::<true>: the same rows, the same answers.
    ///
    /// # Safety
    /// The CPU has SSSE3 and SSE4.1 (available()).
    #[target_feature(enable = "ssse3,sse4.1")]
    pub unsafe fn csv_part(text: &[u8], out: &Columns) -> Result<u64, Refused> {
        let ncols = out.ncols;
        let len = text.len();
        let mut stops = Stops::new(text);
        let mut start = 0usize; // the cell's
        let mut missing = 0u64;
        let last_row = out.row0 + out.rows;
        for row in out.row0..last_row {
            for col in 0..ncols {
                let end = stops.next().ok_or(Refused::Unsupported)?;
                let value = if end == start {
                    if ncols == 1 {
                        return Err(Refused::Unsupported); // an empty line, which CSV readers skip
                    }
                    missing += 1;
                    f64::NAN
                } else {
                    number(text, start, end)?
                };
                out.set(col, row, value);
                let stop = if end < len { text[end] } else { 0 };
                start = end + 1;
                if col + 1 < ncols {
                    if stop != b',' {
                        return Err(Refused::Unsupported);
                    }
                } else if stop == b'\r' {
                    if end + 1 >= len || text[end + 1] != b'\n' || stops.next() != Some(end + 1) {
                        return Err(Refused::Unsupported);
                    }
                    start = end + 2;
                } else if stop != b'\n' && (end < len || row + 1 < last_row) {
                    return Err(Refused::Unsupported); // a cell too many, or fewer lines than rows
                }
            }
        }
        if start >= len { Ok(missing) } else { Err(Refused::Unsupported) }
    }

    /// The number that is all of text[start..end] as simple_number reads it; NotSimple when it is another.
    #[inline(always)]
    unsafe fn number(text: &[u8], start: usize, end: usize) -> Result<f64, Refused> {
        let size = end - start;
        if size > 16 || start + REACH > text.len() {
            return match simple_number(text, start)? {
                (value, stop) if stop == end => Ok(value),
                _ => Err(Refused::Unsupported), // what follows the number is no stop
            };
        }
        // SAFETY (the load): REACH bytes from start are in text.
        let bytes = _mm_loadu_si128(text.as_ptr().add(start).cast());
        // A sign reads as a leading zero digit (one load, no wait on the first byte to find the digits).
        let sign = _mm_and_si128(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'-' as i8)), _mm_cvtsi32_si128(0xff));
        let negative = _mm_cvtsi128_si32(sign) != 0;
        let values = _mm_andnot_si128(sign, _mm_sub_epi8(bytes, _mm_set1_epi8(b'0' as i8)));
        let digit = _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(values, _mm_set1_epi8(9)), values)) as u32;
        let n = size; // lanes of the number, its sign's included: at most 16
        let within = (1u32 << n) - 1;
        let point = _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'.' as i8))) as u32 & within;
        let first = usize::from(negative); // the lane of the first digit
        // digits and at most one point, a digit before the point and after it, no leading zero ("01")
        if n == first || (digit | point) & within != within || point & point.wrapping_sub(1) != 0 {
            return Err(Refused::NotSimple);
        }
        let p = if point == 0 { n } else { point.trailing_zeros() as usize };
        if p == first || p + 1 == n || (p > first + 1 && text[start + first] == b'0') {
            return Err(Refused::NotSimple);
        }
        let (digits, fraction) = if p < n { (n - 1, n - p - 1) } else { (n, 0) };
        let gathered = _mm_shuffle_epi8(values, _mm_loadu_si128(GATHER[n][p].as_ptr().cast()));
        let pairs = _mm_maddubs_epi16(gathered, _mm_setr_epi8(10, 1, 10, 1, 10, 1, 10, 1, 10, 1, 10, 1, 10, 1, 10, 1));
        let fours = _mm_madd_epi16(pairs, _mm_setr_epi16(100, 1, 100, 1, 100, 1, 100, 1));
        let eights = _mm_madd_epi16(_mm_packus_epi32(fours, fours),
                                    _mm_setr_epi16(10000, 1, 10000, 1, 10000, 1, 10000, 1));
        let mantissa = _mm_cvtsi128_si32(eights) as u64 * 100_000_000 + _mm_extract_epi32::<1>(eights) as u64;
        if digits - first == 16 && mantissa > 1 << 53 {
            return Err(Refused::NotSimple);
        }
        // Clinger: a mantissa up to 2^53 and 10^fraction are exact doubles, so one division rounds correctly.
        let value = mantissa as i64 as f64 / POW10[fraction];
        Ok(if negative { -value } else { value })
    }

    /// GATHER[n][p]: the shuffle that moves the digits of a number of n bytes (a sign counts, as a leading zero
    /// digit) whose point is at byte p (p == n: no point) into the last lanes of 16, in order, with zero lanes
    /// before them (0x80: a zero).
    static GATHER: [[[u8; 16]; 17]; 17] = gathers();

    const fn gathers() -> [[[u8; 16]; 17]; 17] {
        let mut table = [[[0x80u8; 16]; 17]; 17];
        let mut n = 1;
        while n <= 16 {
            let mut p = 0;
            while p <= n {
                let digits = if p < n { n - 1 } else { n };
                let mut k = 0;
                while k < digits {
                    table[n][p][16 - digits + k] = (if k < p { k } else { k + 1 }) as u8;
                    k += 1;
                }
                p += 1;
            }
            n += 1;
        }
        table
    }
}

/// Parses CSV data lines (the header already read) into the column-major [ncols][nrows] float64 buffer
/// `out` and stores the number of empty cells (NaN) in *missing. Returns nrows, or UNSUPPORTED. `wide`: 16
/// bytes at a time where the CPU can (mod wide), else (0, or another CPU) byte by byte; the same answers.
///
/// # Safety
/// `text` points to `len` readable bytes, `out` to ncols * nrows writable doubles, `missing` to a u64.
#[no_mangle]
pub unsafe extern "C" fn mlops_csv_f64(
    text: *const u8, len: usize, ncols: usize, nrows: usize, out: *mut f64, missing: *mut u64, threads: u32,
    wide: u32,
) -> i64 {
    if text.is_null() || out.is_null() || missing.is_null() || ncols == 0 || nrows == 0
        || ncols.checked_mul(nrows).is_none() {
        return UNSUPPORTED;
    }
    // SAFETY: the caller's contract above.
    let text = unsafe { std::slice::from_raw_parts(text, len) };
    let cut = if threads > 1 && len >= SPLIT_MIN_BYTES { csv_cut(text) } else { None };
    #[cfg(target_arch = "x86_64")]
    let read: fn(&[u8], &Columns) -> Option<u64> = if wide != 0 && wide::available() { wide_csv_rows } else { csv_rows };
    #[cfg(not(target_arch = "x86_64"))]
    let read: fn(&[u8], &Columns) -> Option<u64> = { let _ = wide; csv_rows };
    match read_halves(text, Columns { ptr: out, nrows, ncols, row0: 0, rows: nrows }, cut, read) {
        Some(count) => {
            // SAFETY: the caller's contract above.
            unsafe { *missing = count };
            nrows as i64
        }
        None => UNSUPPORTED,
    }
}

/// Cut after the first newline past the middle: (end of the first half, start of the second, its lines).
fn csv_cut(text: &[u8]) -> Option<(usize, usize, usize)> {
    let middle = text.len() / 2;
    let cut = middle + text[middle..].iter().position(|&b| b == b'\n')? + 1;
    Some((cut, cut, count_byte(&text[..cut], b'\n')))
}

// ---------------------------------------------------------------------------------------------
// JSON rows

#[inline(always)]
fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_blank(b[i]) {
        i += 1;
    }
    i
}

/// JSON's whitespace.
#[inline(always)]
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Rows `[n,...],[n,...]` (the outer array's inside, blanks allowed between tokens) into `out`.
fn json_part<const SIMPLE: bool>(b: &[u8], out: &Columns) -> Result<u64, Refused> {
    let ncols = out.ncols;
    let mut i = 0usize;
    let last_row = out.row0 + out.rows;
    for row in out.row0..last_row {
        i = skip_blanks(b, i);
        if i >= b.len() || b[i] != b'[' {
            return Err(Refused::Unsupported);
        }
        i += 1;
        for col in 0..ncols {
            i = skip_blanks(b, i);
            let (value, end) = number::<SIMPLE>(b, i)?;
            out.set(col, row, value);
            i = skip_blanks(b, end);
            let expected = if col + 1 < ncols { b',' } else { b']' };
            if i >= b.len() || b[i] != expected {
                return Err(Refused::Unsupported);
            }
            i += 1;
        }
        i = skip_blanks(b, i);
        if row + 1 < last_row {
            if i >= b.len() || b[i] != b',' {
                return Err(Refused::Unsupported);
            }
            i += 1;
        }
    }
    if i == b.len() { Ok(0) } else { Err(Refused::Unsupported) }
}

fn json_rows(text: &[u8], out: &Columns) -> Option<u64> {
    read_part(json_part::<true>(text, out), || json_part::<false>(text, out))
}

/// Parses a JSON array of nrows arrays of ncols numbers into the column-major [ncols][nrows] float64
/// buffer `out`. Returns nrows, or UNSUPPORTED.
///
/// # Safety
/// `text` points to `len` readable bytes, `out` to ncols * nrows writable doubles.
#[no_mangle]
pub unsafe extern "C" fn mlops_json_rows_f64(
    text: *const u8, len: usize, ncols: usize, nrows: usize, out: *mut f64, threads: u32,
) -> i64 {
    if text.is_null() || out.is_null() || ncols == 0 || nrows == 0 || ncols.checked_mul(nrows).is_none() {
        return UNSUPPORTED;
    }
    // SAFETY: the caller's contract above.
    let b = unsafe { std::slice::from_raw_parts(text, len) };
    let start = skip_blanks(b, 0);
    let mut end = b.len();
    while end > start && is_blank(b[end - 1]) {
        end -= 1;
    }
    if end < start + 2 || b[start] != b'[' || b[end - 1] != b']' {
        return UNSUPPORTED;
    }
    let inner = &b[start + 1..end - 1];
    let cut = if threads > 1 && len >= SPLIT_MIN_BYTES { json_cut(inner) } else { None };
    match read_halves(inner, Columns { ptr: out, nrows, ncols, row0: 0, rows: nrows }, cut, json_rows) {
        Some(_) => nrows as i64,
        None => UNSUPPORTED,
    }
}

/// Cut at the first `]` past the middle that a comma follows: (end of the first half, start of the
/// second, rows in the first: its "[" count; each half is then read in full, so a wrong count refuses).
fn json_cut(inner: &[u8]) -> Option<(usize, usize, usize)> {
    let mut i = inner.len() / 2;
    loop {
        i += inner[i..].iter().position(|&b| b == b']')? + 1;
        let comma = skip_blanks(inner, i);
        if comma < inner.len() && inner[comma] == b',' {
            return Some((i, comma + 1, count_byte(&inner[..i], b'[')));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Counting

/// How many bytes of text equal `byte` (the callers' row counts: 4-5x faster than bytes.count here).
///
/// # Safety
/// `text` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn mlops_count_byte(text: *const u8, len: usize, byte: u8) -> u64 {
    if text.is_null() {
        return 0;
    }
    // SAFETY: the caller's contract above.
    let text = unsafe { std::slice::from_raw_parts(text, len) };
    count_byte(text, byte) as u64
}

fn count_byte(text: &[u8], byte: u8) -> usize {
    // Per 255-byte block, in u8 lanes the compiler vectorises; the block's sum cannot wrap around.
    text.chunks(255).map(|block| block.iter().map(|&b| u8::from(b == byte)).sum::<u8>() as usize).sum()
}

// ---------------------------------------------------------------------------------------------
// Answers

/// orjson's spelling of a number (`1.0`, `1.5e-6`, `1500000000000000.0`) as pyarrow's CSV writer spells
/// the same double: the same shortest digits, in plain notation when the decimal exponent is in -6..=9 and
/// without a trailing `.0`, else as `d.ddde±x`. None when `token` is not a number or `out` is full.
fn csv_number(token: &[u8], out: &mut Out) -> Option<()> {
    let negative = token.first() == Some(&b'-');
    let body = &token[usize::from(negative)..];
    let (mantissa, exponent) = match body.iter().position(|&b| b == b'e' || b == b'E') {
        Some(e) => (&body[..e], std::str::from_utf8(&body[e + 1..]).ok()?.parse::<i32>().ok()?),
        None => (body, 0),
    };
    let point = mantissa.iter().position(|&b| b == b'.').unwrap_or(mantissa.len());
    let mut digits = [0u8; 40];
    let mut count = 0usize;
    let mut point_at = i32::try_from(point).ok()?; // digits before the point, leading zeros dropped below
    for (i, &b) in mantissa.iter().enumerate() {
        if i == point {
            continue;
        }
        if !b.is_ascii_digit() || count == digits.len() {
            return None;
        }
        if count == 0 && b == b'0' {
            point_at -= 1; // a leading zero, before the point or after it
            continue;
        }
        digits[count] = b;
        count += 1;
    }
    if mantissa.is_empty() || point == 0 {
        return None;
    }
    while count > 0 && digits[count - 1] == b'0' {
        count -= 1;
    }
    if negative {
        out.put(b"-")?;
    }
    if count == 0 {
        return out.put(b"0");
    }
    let digits = &digits[..count];
    let e = point_at + exponent - 1; // the value is d.ddd x 10^e
    if (-6..=9).contains(&e) {
        if e < 0 {
            out.put(b"0.")?;
            for _ in 0..(-e - 1) {
                out.put(b"0")?;
            }
            out.put(digits)
        } else {
            let whole = (e + 1) as usize;
            out.put(&digits[..whole.min(count)])?;
            for _ in count..whole {
                out.put(b"0")?;
            }
            if count > whole {
                out.put(b".")?;
                out.put(&digits[whole..])?;
            }
            Some(())
        }
    } else {
        out.put(&digits[..1])?;
        if count > 1 {
            out.put(b".")?;
            out.put(&digits[1..])?;
        }
        out.put(if e < 0 { b"e-" } else { b"e+" })?;
        out.put_number(u64::from(e.unsigned_abs()))
    }
}

/// Bytes written one slice after another into a fixed buffer; None once it is full.
struct Out<'a> {
    buf: &'a mut [u8],
    written: usize,
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// High bits of the bytes of `word` equal to `byte`; exact up to the first one (a borrow can only mark
/// bytes after it), which is all token_end reads.
#[inline(always)]
fn equal_bytes(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & (ONES << 7)
}

/// The token of a JSON array starting at hay[from], read eight bytes at a time: (its end: the next comma
/// or `to`; with SPELLING, the position of its first '.', or its end, and whether it holds an 'e').
#[inline(always)]
fn token_end<const SPELLING: bool>(hay: &[u8], from: usize, to: usize) -> (usize, usize, bool) {
    let (mut i, mut point, mut exponent) = (from, usize::MAX, false);
    while i + 8 <= to {
        let Ok(bytes) = <[u8; 8]>::try_from(&hay[i..i + 8]) else { break };
        let word = u64::from_le_bytes(bytes);
        let comma = equal_bytes(word, b',');
        if !SPELLING {
            if comma != 0 {
                return (i + (comma.trailing_zeros() / 8) as usize, 0, false);
            }
            i += 8;
            continue;
        }
        // the bytes before the comma (all eight without one)
        let before = if comma == 0 { u64::MAX } else { (comma & comma.wrapping_neg()) - 1 };
        let points = equal_bytes(word, b'.') & before;
        if point == usize::MAX && points != 0 {
            point = i + (points.trailing_zeros() / 8) as usize;
        }
        exponent |= equal_bytes(word, b'e') & before != 0;
        if comma != 0 {
            let end = i + (comma.trailing_zeros() / 8) as usize;
            return (end, point.min(end), exponent);
        }
        i += 8;
    }
    while i < to && hay[i] != b',' {
        if hay[i] == b'.' && point == usize::MAX {
            point = i;
        }
        exponent |= hay[i] == b'e';
        i += 1;
    }
    (i, point.min(i), exponent)
}

const POW10_U64: [u64; 20] = {
    let mut powers = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        powers[i] = powers[i - 1] * 10;
        i += 1;
    }
    powers
};

/// Bytes up to which Out::put_from copies a fixed block rather than calling memcpy for each short piece.
const SHORT: usize = 32;

impl Out<'_> {
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.written + bytes.len();
        self.buf.get_mut(self.written..end)?.copy_from_slice(bytes);
        self.written = end;
        Some(())
    }

    /// The decimal digits of n, written in place (a copy of digits staged on the stack would be read back
    /// before its byte stores reach the cache: a stall per number).
    #[inline(always)]
    fn put_number(&mut self, mut n: u64) -> Option<()> {
        let mut digits = 1;
        while digits < 20 && n >= POW10_U64[digits] {
            digits += 1;
        }
        let end = self.written + digits;
        let place = self.buf.get_mut(self.written..end)?;
        for slot in place.iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        self.written = end;
        Some(())
    }

    /// src[start..end]; a short one as the fixed SHORT bytes from start (two vector moves) when both src
    /// and the buffer have that much room, the bytes past end being overwritten by what follows.
    #[inline(always)]
    fn put_from(&mut self, src: &[u8], start: usize, end: usize) -> Option<()> {
        let w = self.written;
        if end - start <= SHORT && start + SHORT <= src.len() && w + SHORT <= self.buf.len() {
            let block: &[u8; SHORT] = src[start..start + SHORT].try_into().ok()?;
            self.buf[w..w + SHORT].copy_from_slice(block);
            self.written = w + end - start;
            Some(())
        } else {
            self.put(src.get(start..end)?)
        }
    }
}

/// Lays out n rows of text from k token columns: row r is
/// `pieces[0] t(0,r) pieces[1] ... t(k-1,r) pieces[k]`, rows joined by `between`. Column c's tokens come
/// from a JSON array (`[t,t,...]` as orjson writes a numpy column or a list of plain strings: no blanks,
/// commas only between tokens), except for the column `counted` (unless it is k or more): its row r is the
/// decimal number count0 + r; and for the column `lookup` when `index` is not null: its row r is
/// keys[index[r]]. With `csv`, numbers are spelled as pyarrow's CSV writer spells them (csv_number): `null`
/// as nothing (a missing value), `1` for orjson's `1.0`, `0.0000015` for its `1.5e-6`.
/// Returns the bytes written, or UNSUPPORTED when a column does not hold exactly n tokens, an index is
/// out of the keys, or `out` is too small.
///
/// # Safety
/// `columns`/`column_lens` point to k entries, `pieces`/`piece_lens` to k + 1, `keys`/`key_lens` to nkeys,
/// `index` (unless null) to n; each pointer to as many readable bytes as its length says; `out` to
/// `capacity` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn mlops_lay_out(
    columns: *const *const u8, column_lens: *const usize, k: usize, pieces: *const *const u8,
    piece_lens: *const usize, between: *const u8, between_len: usize, n: usize, counted: usize, count0: u64,
    lookup: usize,
    index: *const i64, keys: *const *const u8, key_lens: *const usize, nkeys: usize, csv: u8,
    out: *mut u8, capacity: usize,
) -> i64 {
    if columns.is_null() || column_lens.is_null() || pieces.is_null() || piece_lens.is_null() || out.is_null()
        || k == 0 || n == 0 || (between.is_null() && between_len > 0)
        || (!index.is_null() && (lookup >= k || keys.is_null() || key_lens.is_null())) {
        return UNSUPPORTED;
    }
    // SAFETY: the caller's contract above.
    let (columns, pieces, between, out) = unsafe {
        (slices(columns, column_lens, k), slices(pieces, piece_lens, k + 1),
         if between_len > 0 { std::slice::from_raw_parts(between, between_len) } else { &[][..] },
         std::slice::from_raw_parts_mut(out, capacity))
    };
    // SAFETY: the caller's contract above.
    let (lookup, keys) = if index.is_null() {
        (None, Vec::new())
    } else {
        // SAFETY: the caller's contract above.
        unsafe { (Some((lookup, std::slice::from_raw_parts(index, n))), slices(keys, key_lens, nkeys)) }
    };
    let layout = Layout {
        columns: &columns, pieces: Padded::new(&pieces), between: Padded::new(&[between]),
        counter: (counted < k).then_some((counted, count0)), lookup, keys: Padded::new(&keys), csv: csv != 0,
    };
    match layout.write(n, out) {
        Some(written) => written as i64,
        None => UNSUPPORTED,
    }
}

/// count (pointer, length) pairs as byte slices.
///
/// # Safety
/// As mlops_lay_out's.
unsafe fn slices<'a>(pointers: *const *const u8, lens: *const usize, count: usize) -> Vec<&'a [u8]> {
    if count == 0 {
        return Vec::new();
    }
    // SAFETY: the caller's.
    unsafe {
        std::slice::from_raw_parts(pointers, count).iter().zip(std::slice::from_raw_parts(lens, count))
            .map(|(&p, &len)| if len == 0 { &[][..] } else { std::slice::from_raw_parts(p, len) }).collect()
    }
}

struct Layout<'a> {
    columns: &'a [&'a [u8]],
    pieces: Padded,
    between: Padded,
    /// The column written as first + r, and first.
    counter: Option<(usize, u64)>,
    /// The column written as keys[positions[r]], and positions.
    lookup: Option<(usize, &'a [i64])>,
    keys: Padded,
    csv: bool,
}

/// Short strings (pieces, keys) stored with SHORT bytes of room after each, so that Out::put_from copies
/// them as a fixed SHORT-byte block.
struct Padded {
    bytes: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl Padded {
    fn new(strings: &[&[u8]]) -> Padded {
        let mut bytes = Vec::new();
        let spans = strings.iter().map(|s| {
            let start = bytes.len();
            bytes.extend_from_slice(s);
            bytes.resize(bytes.len() + SHORT, 0);
            (start, start + s.len())
        }).collect();
        Padded { bytes, spans }
    }

    #[inline(always)]
    fn put(&self, i: usize, out: &mut Out) -> Option<()> {
        let (start, end) = *self.spans.get(i)?;
        out.put_from(&self.bytes, start, end)
    }
}

/// Where a column's cells come from.
#[derive(Clone, Copy)]
enum Cell<'a> {
    /// The column's JSON array of tokens.
    Token,
    /// keys[positions[r]].
    Key(&'a [i64]),
    /// The number first + r.
    Count(u64),
}

impl Layout<'_> {
    /// All n rows into `out`; the bytes written. (Two threads, each writing half the rows, were slower here
    /// than one: the second half's buffer, its copy and the thread cost more than the half saved.)
    fn write(&self, n: usize, out: &mut [u8]) -> Option<usize> {
        let k = self.columns.len();
        let cells: Vec<Cell> = (0..k).map(|c| match (self.lookup, self.counter) {
            (Some((l, positions)), _) if l == c => Cell::Key(positions),
            (_, Some((counted, first))) if counted == c => Cell::Count(first),
            _ => Cell::Token,
        }).collect();
        for (column, cell) in self.columns.iter().zip(&cells) {
            let is_array = column.len() >= 2 && column[0] == b'[' && column[column.len() - 1] == b']';
            if matches!(cell, Cell::Token) && !is_array {
                return None;
            }
        }
        let mut cursors = vec![1usize; k]; // just past each token column's "["
        let mut out = Out { buf: out, written: 0 };
        for row in 0..n {
            if row > 0 {
                self.between.put(0, &mut out)?;
            }
            for (c, (column, cell)) in self.columns.iter().zip(&cells).enumerate() {
                self.pieces.put(c, &mut out)?;
                match *cell {
                    Cell::Key(positions) => self.keys.put(usize::try_from(positions[row]).ok()?, &mut out)?,
                    Cell::Count(first) => out.put_number(first.checked_add(row as u64)?)?,
                    Cell::Token => cursors[c] = self.copy_token(column, cursors[c], &mut out)?,
                }
            }
            self.pieces.put(k, &mut out)?;
        }
        // every token column read to its end: exactly n tokens each
        let used_up = cells.iter().zip(self.columns).zip(&cursors)
            .all(|((cell, column), &cursor)| !matches!(cell, Cell::Token) || cursor == column.len());
        used_up.then_some(out.written)
    }

    /// The token of `column` at `start` (respelled for CSV when a number's spellings differ); where the next
    /// one starts.
    #[inline(always)]
    fn copy_token(&self, column: &[u8], start: usize, out: &mut Out) -> Option<usize> {
        let stop = column.len() - 1; // the closing "]" ends the last token
        let (end, point, exponent) =
            if self.csv { token_end::<true>(column, start, stop) } else { token_end::<false>(column, start, stop) };
        if end == start {
            return None; // an empty token, or fewer than n
        }
        // orjson's spelling is pyarrow's for strings, integers and plain decimals of at most 10
        // integer digits (orjson writes exponents below 1e-5, pyarrow below 1e-6) not ending in ".0"
        let same = !self.csv || column[start] == b'"' || (!exponent && column[start] != b'n'
            && (point == end || (point - start <= 10 && !column[start..end].ends_with(b".0"))));
        if same {
            out.put_from(column, start, end)?;
        } else if &column[start..end] != b"null" {
            csv_number(&column[start..end], out)?;
        }
        Some(end + 1)
    }
}

