//! Applying rules to one label set.

use std::fmt::Write;

use super::expand::go_expand;
use super::{hash_mod, Pattern, RelabelConfig, Rule, Scratch, Template, SCRATCH};
use crate::name::valid_label_name;

/// Applies `configs` in order to `labels` (name, value pairs, `__name__`
/// included). Returns false when a rule drops the set; its content is then
/// unspecified. Otherwise `labels` ends sorted by name, without empty values
/// (a label set to `""` is removed, as Prometheus does).
///
/// Allocates only when a rule adds or changes a label: a keep, drop or
/// labeldrop rule never allocates.
pub fn process(labels: &mut Vec<(String, String)>, configs: &[RelabelConfig]) -> bool {
    // Prometheus' label builder treats an empty value as absent from the start.
    labels.retain(|(_, v)| !v.is_empty());
    let keep = SCRATCH.with_borrow_mut(|scratch| {
        let mut set = LabelSet {
            untouched: labels.len(),
            labels: &mut *labels,
        };
        configs.iter().all(|c| c.apply(&mut set, scratch))
    });
    if keep && !labels.is_sorted_by(|a, b| a.0 <= b.0) {
        labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }
    keep
}

/// The labels being relabeled, in the order Prometheus' label builder iterates
/// them (which decides labelmap collisions): labels no rule has set yet, in
/// input order, then the set ones, in the order they were first set.
struct LabelSet<'a> {
    labels: &'a mut Vec<(String, String)>,
    /// How many leading labels no rule has set.
    untouched: usize,
}

impl LabelSet<'_> {
    fn position(&self, name: &str) -> Option<usize> {
        self.labels.iter().position(|(n, _)| n == name)
    }

    /// A missing label reads as `""`.
    fn get(&self, name: &str) -> &str {
        self.position(name).map_or("", |i| &self.labels[i].1)
    }

    fn set(&mut self, name: &str, value: &str) {
        if value.is_empty() {
            return self.del(name);
        }
        match self.position(name) {
            Some(i) if i >= self.untouched => assign(&mut self.labels[i].1, value),
            Some(i) => {
                // Moving an owned pair keeps its strings: no allocation.
                let mut label = self.labels.remove(i);
                self.untouched -= 1;
                assign(&mut label.1, value);
                self.labels.push(label);
            }
            None => self.labels.push((name.to_owned(), value.to_owned())),
        }
    }

    fn del(&mut self, name: &str) {
        if let Some(i) = self.position(name) {
            self.remove(i);
        }
    }

    fn remove(&mut self, i: usize) {
        self.labels.remove(i);
        if i < self.untouched {
            self.untouched -= 1;
        }
    }

    /// Removes the labels whose name `drop` says.
    fn drop_names(&mut self, drop: impl Fn(&str) -> bool) {
        let mut i = 0;
        while i < self.labels.len() {
            if drop(&self.labels[i].0) {
                self.remove(i);
            } else {
                i += 1;
            }
        }
    }
}

fn assign(slot: &mut String, value: &str) {
    if slot != value {
        slot.clear();
        slot.push_str(value);
    }
}

impl RelabelConfig {
    /// One rule; false drops the set.
    fn apply(&self, set: &mut LabelSet<'_>, s: &mut Scratch) -> bool {
        s.value.clear();
        for (i, name) in self.source_labels.iter().enumerate() {
            if i > 0 {
                s.value.push_str(&self.separator);
            }
            s.value.push_str(set.get(name));
        }
        let value = s.value.as_str();
        match &self.rule {
            Rule::Keep(re) => return re.is_match(value),
            Rule::Drop(re) => return !re.is_match(value),
            Rule::KeepEqual(target) => return set.get(target) == value,
            Rule::DropEqual(target) => return set.get(target) != value,
            Rule::Replace {
                regex,
                target,
                replacement,
            } => replace(set, s, regex, target, replacement),
            Rule::Lowercase(target) => {
                s.out.clear();
                s.out.extend(value.chars().flat_map(char::to_lowercase));
                set.set(target, &s.out);
            }
            Rule::Uppercase(target) => {
                s.out.clear();
                s.out.extend(value.chars().flat_map(char::to_uppercase));
                set.set(target, &s.out);
            }
            Rule::HashMod { modulus, target } => {
                s.out.clear();
                let _ = write!(s.out, "{}", hash_mod(value, *modulus));
                set.set(target, &s.out);
            }
            Rule::LabelMap { regex, replacement } => label_map(set, regex, replacement),
            Rule::LabelDrop(re) => set.drop_names(|n| re.is_match(n)),
            Rule::LabelKeep(re) => set.drop_names(|n| !re.is_match(n)),
        }
        true
    }
}

fn replace(
    set: &mut LabelSet<'_>,
    s: &mut Scratch,
    regex: &Pattern,
    target: &Template,
    replacement: &Template,
) {
    if !target.has_vars && !replacement.has_vars {
        if regex.is_match(&s.value) {
            set.set(&target.text, &replacement.text);
        }
        return;
    }
    let Some(caps) = regex.captures(&s.value) else {
        return;
    };
    s.target.clear();
    go_expand(&mut s.target, &target.text, &caps);
    // Prometheus skips the rule when the expanded name is not a label name.
    if !valid_label_name(&s.target) {
        return;
    }
    s.out.clear();
    go_expand(&mut s.out, &replacement.text, &caps);
    set.set(&s.target, &s.out);
}

/// Copies each label whose name matches to the name the replacement makes
/// of it; all names are read before any is written, as Prometheus does.
fn label_map(set: &mut LabelSet<'_>, regex: &Pattern, replacement: &Template) {
    if !set.labels.iter().any(|(n, _)| regex.is_match(n)) {
        return;
    }
    let mapped: Vec<(String, String)> = set
        .labels
        .iter()
        .filter_map(|(name, value)| {
            let caps = regex.captures(name)?;
            let mut new_name = String::new();
            go_expand(&mut new_name, &replacement.text, &caps);
            Some((new_name, value.clone()))
        })
        .collect();
    for (name, value) in mapped {
        set.set(&name, &value);
    }
}
