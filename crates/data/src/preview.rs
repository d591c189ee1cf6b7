//! A PNG contact sheet of a split's first images with their class names, to check orientation
//! and colours by eye.

use crate::dataset::{Split, HEIGHT, WIDTH};
use crate::error::{DataError, Result};

/// Pixel scale of each image in the grid.
const ZOOM: usize = 2;
/// Margin around each tile.
const MARGIN: usize = 3;
/// Height of the caption strip under each image.
const CAPTION: usize = 11;
const TILE_W: usize = WIDTH * ZOOM + 2 * MARGIN;
const TILE_H: usize = HEIGHT * ZOOM + CAPTION + 2 * MARGIN;
const BACKGROUND: [u8; 3] = [32, 32, 32];
const INK: [u8; 3] = [235, 235, 235];

/// 5×7 glyphs, one byte per row, bit 4 = leftmost column.
fn glyph(ch: char) -> [u8; 7] {
    match ch.to_ascii_uppercase() {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '_' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        ' ' => [0x00; 7],
        _ => [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F],
    }
}

/// Writes `text` into the RGB canvas (`width` pixels wide) with its top-left corner at (y, x),
/// 6 pixels per character, clipped to `max_chars`.
fn draw_text(canvas: &mut [u8], width: usize, y: usize, x: usize, text: &str, max_chars: usize) {
    for (k, ch) in text.chars().take(max_chars).enumerate() {
        let rows = glyph(ch);
        for (dy, bits) in rows.iter().enumerate() {
            for dx in 0..5 {
                if bits & (0x10 >> dx) != 0 {
                    let p = ((y + dy) * width + x + k * 6 + dx) * 3;
                    canvas[p..p + 3].copy_from_slice(&INK);
                }
            }
        }
    }
}

/// The RGB pixels (row-major, 3 bytes per pixel) and size of the grid [`preview_png`] encodes.
pub fn preview_rgb(
    split: &Split,
    class_names: &[String],
    count: usize,
    columns: usize,
) -> Result<(Vec<u8>, usize, usize)> {
    if columns == 0 {
        return Err(DataError::InvalidConfig {
            field: "columns",
            value: "0".into(),
            reason: "the grid needs at least one column",
        });
    }
    let count = count.min(split.len());
    if count == 0 {
        return Err(DataError::InvalidConfig {
            field: "count",
            value: format!("{count} (split has {} images)", split.len()),
            reason: "the preview needs at least one image",
        });
    }
    let rows = count.div_ceil(columns);
    let (w, h) = (columns.min(count) * TILE_W, rows * TILE_H);
    let mut canvas: Vec<u8> = BACKGROUND.iter().copied().cycle().take(w * h * 3).collect();
    let max_chars = (TILE_W - 2) / 6;
    for i in 0..count {
        let (ty, tx) = ((i / columns) * TILE_H, (i % columns) * TILE_W);
        let img = split.image(i);
        for y in 0..HEIGHT * ZOOM {
            for x in 0..WIDTH * ZOOM {
                let (sy, sx) = (y / ZOOM, x / ZOOM);
                let p = ((ty + MARGIN + y) * w + tx + MARGIN + x) * 3;
                for c in 0..3 {
                    canvas[p + c] = img[c * HEIGHT * WIDTH + sy * WIDTH + sx];
                }
            }
        }
        let label = split.label(i) as usize;
        let name = class_names
            .get(label)
            .cloned()
            .unwrap_or_else(|| label.to_string());
        draw_text(
            &mut canvas,
            w,
            ty + MARGIN + HEIGHT * ZOOM + 2,
            tx + 1,
            &name,
            max_chars,
        );
    }
    Ok((canvas, w, h))
}

/// A PNG of the first `count` images of `split` in a grid `columns` wide, each image shown at
/// 2× with its class name (from `class_names`, by label) underneath.
pub fn preview_png(
    split: &Split,
    class_names: &[String],
    count: usize,
    columns: usize,
) -> Result<Vec<u8>> {
    let (rgb, w, h) = preview_rgb(split, class_names, count, columns)?;
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&rgb)?;
        writer.finish()?;
    }
    Ok(out)
}
