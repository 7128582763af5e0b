//! Text labels burnt into RGB images ("noisy" / "clipdenoise" on the before/after PNG): a 5x7
//! bitmap font of lower-case letters, digits and a few signs, scaled by whole pixels, white on
//! a dark box so it reads on any picture. No font files needed.

/// 5x7 glyphs, one row per byte (bit 4 = leftmost column).
fn glyph(c: char) -> [u8; 7] {
    match c {
        'a' => [0, 0, 0x0e, 0x01, 0x0f, 0x11, 0x0f],
        'b' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1e],
        'c' => [0, 0, 0x0e, 0x10, 0x10, 0x11, 0x0e],
        'd' => [0x01, 0x01, 0x0d, 0x13, 0x11, 0x11, 0x0f],
        'e' => [0, 0, 0x0e, 0x11, 0x1f, 0x10, 0x0e],
        'f' => [0x06, 0x09, 0x08, 0x1c, 0x08, 0x08, 0x08],
        'g' => [0, 0x0f, 0x11, 0x11, 0x0f, 0x01, 0x0e],
        'h' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11],
        'i' => [0x04, 0, 0x0c, 0x04, 0x04, 0x04, 0x0e],
        'j' => [0x02, 0, 0x06, 0x02, 0x02, 0x12, 0x0c],
        'k' => [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12],
        'l' => [0x0c, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e],
        'm' => [0, 0, 0x1a, 0x15, 0x15, 0x11, 0x11],
        'n' => [0, 0, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0, 0, 0x0e, 0x11, 0x11, 0x11, 0x0e],
        'p' => [0, 0, 0x1e, 0x11, 0x1e, 0x10, 0x10],
        'q' => [0, 0, 0x0d, 0x13, 0x0f, 0x01, 0x01],
        'r' => [0, 0, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0, 0, 0x0e, 0x10, 0x0e, 0x01, 0x1e],
        't' => [0x08, 0x08, 0x1c, 0x08, 0x08, 0x09, 0x06],
        'u' => [0, 0, 0x11, 0x11, 0x11, 0x13, 0x0d],
        'v' => [0, 0, 0x11, 0x11, 0x11, 0x0a, 0x04],
        'w' => [0, 0, 0x11, 0x11, 0x15, 0x15, 0x0a],
        'x' => [0, 0, 0x11, 0x0a, 0x04, 0x0a, 0x11],
        'y' => [0, 0, 0x11, 0x11, 0x0f, 0x01, 0x0e],
        'z' => [0, 0, 0x1f, 0x02, 0x04, 0x08, 0x1f],
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        '.' => [0, 0, 0, 0, 0, 0x0c, 0x0c],
        '-' => [0, 0, 0, 0x1f, 0, 0, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        _ => [0; 7],
    }
}

/// Draw `text` (lower-cased) with its top-left corner at (x, y) into a tightly packed RGB8
/// image of `width` x `height`, each font pixel `scale` x `scale`, on a dark box with a margin
/// of one font pixel. Whatever falls outside the image is clipped.
pub fn draw(
    rgb: &mut [u8],
    width: usize,
    height: usize,
    x: usize,
    y: usize,
    text: &str,
    scale: usize,
) {
    let chars: Vec<char> = text.to_lowercase().chars().collect();
    let (box_w, box_h) = ((chars.len() * 6 + 1) * scale, 9 * scale);
    let mut put = |px: usize, py: usize, v: u8, blend: bool| {
        if px < width && py < height {
            let i = (py * width + px) * 3;
            for c in &mut rgb[i..i + 3] {
                *c = if blend { *c / 3 } else { v };
            }
        }
    };
    for py in y..y + box_h {
        for px in x..x + box_w {
            put(px, py, 0, true);
        }
    }
    for (k, ch) in chars.iter().enumerate() {
        let g = glyph(*ch);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) == 0 {
                    continue;
                }
                let (gx, gy) = (x + (1 + k * 6 + col) * scale, y + (1 + row) * scale);
                for dy in 0..scale {
                    for dx in 0..scale {
                        put(gx + dx, gy + dy, 255, false);
                    }
                }
            }
        }
    }
}

/// A scale that makes the text about 1/30 of the image height tall (at least 1).
pub fn scale_for(height: usize) -> usize {
    (height / 270).max(1) * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_writes_white_glyph_pixels_on_a_darkened_box_and_clips() {
        let (w, h) = (40, 20);
        let mut img = vec![150u8; w * h * 3];
        draw(&mut img, w, h, 1, 1, "noisy", 1);
        let px = |x: usize, y: usize| img[(y * w + x) * 3];
        // 'n' row 2 (0x16 = 10110): columns 0, 2, 3 lit, at x = 1 + 1 + col, y = 1 + 1 + 2.
        assert_eq!(px(2, 4), 255);
        assert_eq!(px(3, 4), 50);
        assert_eq!(px(4, 4), 255);
        // Outside the box the picture is untouched.
        assert_eq!(px(39, 19), 150);
        // Near the edge: clipped, no panic.
        draw(&mut img, w, h, 35, 15, "clipdenoise", 3);
    }

    #[test]
    fn unknown_characters_are_blank_and_every_letter_has_a_glyph() {
        assert_eq!(glyph('#'), [0; 7]);
        for c in 'a'..='z' {
            assert_ne!(glyph(c), [0; 7], "{c}");
        }
    }
}
