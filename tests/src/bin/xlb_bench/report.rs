//! A benchmark's results: a table and notes, as plain text for stdout and
//! as markdown, beside the JSON the benchmark builds; charts; and the machine.

use std::{ffi::CStr, fs, path::Path};

use serde_json::{json, Value};

/// The machine a benchmark ran on.
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub kernel: String,
}

impl Machine {
    pub fn probe() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |line: &str, name: &str| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_string())
        };
        let cpu = cpuinfo
            .lines()
            .find_map(|line| field(line, "model name"))
            .unwrap_or_else(|| "unknown CPU".into());
        let cpus = cpuinfo
            .lines()
            .filter(|line| field(line, "processor").is_some())
            .count();
        Machine {
            cpu,
            cpus,
            kernel: uname(),
        }
    }

    pub fn summary(&self) -> String {
        format!("{}, {} logical CPUs, {}", self.cpu, self.cpus, self.kernel)
    }

    pub fn json(&self) -> Value {
        json!({ "cpu": self.cpu, "logical_cpus": self.cpus, "kernel": self.kernel })
    }
}

/// `uname -srm`.
fn uname() -> String {
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut name) } != 0 {
        return "unknown kernel".into();
    }
    let field = |f: &[libc::c_char]| {
        unsafe { CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    format!(
        "{} {} {}",
        field(&name.sysname),
        field(&name.release),
        field(&name.machine)
    )
}

pub struct Table {
    pub headers: Vec<&'static str>,
    /// Columns aligned right (numbers).
    pub right: Vec<bool>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    fn text(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r[c].len())
                    .chain([self.headers[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(c, cell)| match self.right[c] {
                    true => format!("{cell:>w$}", w = widths[c]),
                    false => format!("{cell:<w$}", w = widths[c]),
                })
                .collect();
            padded.join("  ").trim_end().to_string() + "\n"
        };
        let mut out = line(self.headers.clone());
        for row in &self.rows {
            out += &line(row.iter().map(String::as_str).collect());
        }
        out
    }

    fn markdown(&self) -> String {
        let line = |cells: Vec<&str>| format!("| {} |\n", cells.join(" | "));
        let rule: Vec<&str> = self
            .right
            .iter()
            .map(|&r| if r { "---:" } else { "---" })
            .collect();
        let mut out = line(self.headers.clone()) + &line(rule);
        for row in &self.rows {
            out += &line(row.iter().map(String::as_str).collect());
        }
        out
    }
}

/// Draws a chart at the path given, with a function of [`crate::plot`].
type Draw = dyn Fn(&Path) -> anyhow::Result<()>;

/// A chart of a report, drawn into the output directory beside its markdown.
pub struct Plot {
    /// The file name, e.g. `failover.svg`.
    pub file: String,
    /// What the chart shows: its alt text in the markdown.
    pub caption: String,
    pub draw: Box<Draw>,
}

impl Plot {
    pub fn new(
        file: &str,
        caption: &str,
        draw: impl Fn(&Path) -> anyhow::Result<()> + 'static,
    ) -> Self {
        Plot {
            file: file.into(),
            caption: caption.into(),
            draw: Box::new(draw),
        }
    }
}

pub struct Report {
    pub title: String,
    /// Lines under the title: machine, run sizes.
    pub about: Vec<String>,
    pub table: Table,
    /// Headed tables after the table (and its charts): the goals.
    pub tables: Vec<(&'static str, Table)>,
    /// Headed lists after the tables.
    pub sections: Vec<(&'static str, Vec<String>)>,
    /// Charts, shown in the markdown after the table.
    pub plots: Vec<Plot>,
    pub json: Value,
}

impl Report {
    pub fn text(&self) -> String {
        let mut out = format!("{}\n", self.title);
        for line in &self.about {
            out += &format!("{line}\n");
        }
        out += &format!("\n{}", self.table.text());
        for (heading, table) in &self.tables {
            out += &format!("\n{heading}\n{}", table.text());
        }
        for (heading, lines) in &self.sections {
            out += &format!("\n{heading}\n");
            for line in lines {
                out += &format!("  {line}\n");
            }
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("# {}\n\n", self.title);
        for line in &self.about {
            out += &format!("- {line}\n");
        }
        out += &format!("\n{}", self.table.markdown());
        for plot in &self.plots {
            out += &format!("\n![{}]({})\n", plot.caption, plot.file);
        }
        for (heading, table) in &self.tables {
            out += &format!("\n## {heading}\n\n{}", table.markdown());
        }
        for (heading, lines) in &self.sections {
            out += &format!("\n## {heading}\n\n");
            for line in lines {
                out += &format!("- {line}\n");
            }
        }
        out
    }
}

/// A goals table's verdict.
pub fn met(met: bool) -> &'static str {
    if met {
        "MET"
    } else {
        "MISSED"
    }
}

/// A goal's line: `met:` or `MISSED:`, then `line`.
pub fn verdict(line: &str, met: bool) -> String {
    format!("{} {line}", if met { "met:" } else { "MISSED:" })
}

/// Draws `plots` into a scratch directory named after `test`, and returns
/// their SVGs one after another.
#[cfg(test)]
pub fn drawn(test: &str, plots: &[Plot]) -> String {
    let dir = std::env::temp_dir().join(format!("xlb-{test}-plot-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let mut svgs = String::new();
    for plot in plots {
        let path = dir.join(&plot.file);
        (plot.draw)(&path).unwrap();
        svgs += &fs::read_to_string(&path).unwrap();
    }
    fs::remove_dir_all(&dir).unwrap();
    svgs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_shows_plots_after_the_table() {
        let report = Report {
            title: "t".into(),
            about: vec![],
            table: Table {
                headers: vec!["a"],
                right: vec![true],
                rows: vec![vec!["1".into()]],
            },
            tables: vec![],
            sections: vec![("goals", vec!["met".into()])],
            plots: vec![Plot::new("t.svg", "outage per contender", |_| Ok(()))],
            json: Value::Null,
        };
        let md = report.markdown();
        let (table, plot, goals) = (
            md.find("| 1 |").unwrap(),
            md.find("\n![outage per contender](t.svg)\n").unwrap(),
            md.find("## goals").unwrap(),
        );
        assert!(table < plot && plot < goals, "{md}");
    }
}
