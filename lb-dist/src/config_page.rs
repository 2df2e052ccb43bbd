//! xlb.toml(5): the file's keys, each with its default and whether a
//! reload applies it, from [`xlb::config::keys`].

use roff::{bold, italic, roman, Roff};
use xlb::config::keys::{keys, SECTIONS};

/// The page, in roff.
pub fn render(version: &str) -> String {
    let mut page = Roff::new();
    page.control("TH", ["XLB.TOML", "5", "", &format!("xlb {version}")])
        .control("SH", ["NAME"])
        .text([roman("xlb.toml - the configuration of the xlb agent")])
        .control("SH", ["SYNOPSIS"])
        .text([bold("/etc/xlb/xlb.toml")])
        .control("SH", ["DESCRIPTION"])
        .text([
            roman("The agent, "),
            bold("xlb run --config FILE"),
            roman(
                ", reads a TOML file: the director in [agent], data-plane sizes in [tables], \
                 virtual servers in [[service]] with their backends, and VRRP instances in \
                 [[vrrp.instance]]. Durations are written like \"2s\", \"500ms\" or \"1m30s\". \
                 A key left out takes its default; ",
            ),
            bold("xlb config dump"),
            roman(" prints the running configuration in this form."),
        ])
        .control("PP", [])
        .text([
            bold("xlb check"),
            roman(" validates a file. "),
            bold("xlb reload"),
            roman(" (or SIGHUP, or "),
            bold("systemctl reload xlb"),
            roman(
                ") reads the file again and applies what changed. A change of a key marked \
                 \"restart\" below takes effect only when the agent starts: a reload with such \
                 a change is refused and changes nothing.",
            ),
        ])
        .control("PP", [])
        .text([roman(
            "The package installs a commented example with every section as \
             /etc/xlb/xlb.toml.",
        )])
        .control("SH", ["KEYS"]);
    let keys = keys();
    for (section, title) in SECTIONS {
        page.control("SS", [*title]);
        let prefix = format!("{section}.");
        let in_section = keys.iter().filter(|k| {
            k.path
                .strip_prefix(&prefix)
                .is_some_and(|n| !n.contains('.'))
        });
        for key in in_section {
            page.control("TP", [])
                .text([bold(&key.path[prefix.len()..])])
                .text([roman(&key.about)])
                .control("br", [])
                .text([
                    italic("Default:"),
                    roman(format!(" {}. ", key.default)),
                    italic("Applies on:"),
                    roman(format!(" {}.", key.applies.as_str())),
                ]);
        }
    }
    page.control("SH", ["SEE ALSO"])
        .text([roman("xlb(1), xlb-run(1), xlb-check(1), xlb-reload(1)")]);
    page.render()
}

#[cfg(test)]
mod tests {
    use super::render;
    use xlb::config::keys::{keys, Applies};

    #[test]
    fn the_page_lists_every_key_with_its_default_and_when_it_applies() {
        let page = render("0.0.0");
        assert!(page.contains(".TH XLB.TOML 5 "), "{page}");
        let keys = keys();
        assert_eq!(page.matches("\n.TP\n").count(), keys.len(), "{page}");
        for key in &keys {
            let name = key.path.rsplit('.').next().unwrap();
            let entry = format!("\n.TP\n\\fB{name}\\fR\n");
            assert!(page.contains(&entry), "{} is missing:\n{page}", key.path);
        }
        for applies in [Applies::Reload, Applies::Restart] {
            let marked = format!("\\fIApplies on:\\fR {}.\n", applies.as_str());
            let count = keys.iter().filter(|k| k.applies == applies).count();
            assert_eq!(page.matches(&marked).count(), count, "{marked}");
        }
    }
}
