//! Human output helpers: aligned tables with upper-case headers.
//!
//! Columns are separated by two spaces and padded to their widest cell; the last column
//! is not padded and no line ends in blanks, so `awk '{print $N}'` and `column -t`
//! both work on the output.

use std::fmt::Write as _;

/// Render `rows` under `headers`, one line each, every line ending in `\n`.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        let mut cells = cells.peekable();
        let mut i = 0;
        while let Some(cell) = cells.next() {
            if cells.peek().is_none() {
                s.push_str(cell);
            } else {
                let width = widths.get(i).copied().unwrap_or(0);
                let _ = write!(s, "{cell:<width$}  ");
            }
            i += 1;
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// `-` for an absent value, so every table cell holds one word.
pub fn or_dash(s: Option<&str>) -> String {
    s.unwrap_or("-").to_string()
}

/// A VLAN list as typed on the command line: `10,20`.
pub fn vlan_list(vids: &[u16]) -> String {
    let v: Vec<String> = vids.iter().map(u16::to_string).collect();
    v.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn columns_padded_to_widest_cell() {
        let t = table(
            &["PORT", "VLAN", "MAC", "AGE"],
            &[
                row(&["v1", "0", "02:00:00:00:00:01", "3"]),
                row(&["trunk0", "10", "02:00:00:00:00:02", "12"]),
            ],
        );
        assert_eq!(
            t,
            "PORT    VLAN  MAC                AGE\n\
             v1      0     02:00:00:00:00:01  3\n\
             trunk0  10    02:00:00:00:00:02  12\n"
        );
    }

    #[test]
    fn empty_table_is_the_header() {
        assert_eq!(table(&["NAME", "IP"], &[]), "NAME  IP\n");
    }

    #[test]
    fn no_trailing_blanks_when_last_cell_is_short() {
        let t = table(&["A", "LONGHEADER"], &[row(&["x", ""])]);
        assert_eq!(t, "A  LONGHEADER\nx\n");
    }

    #[test]
    fn vlan_lists_join_with_commas() {
        assert_eq!(vlan_list(&[10, 20]), "10,20");
        assert_eq!(vlan_list(&[]), "");
        assert_eq!(or_dash(None), "-");
    }
}
