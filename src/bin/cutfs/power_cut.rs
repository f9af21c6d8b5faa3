//! The power cut and the clean shutdown: what the backing directory holds after each. A cut
//! keeps a random part of the pending sectors, size changes and namespace changes (seeded, so
//! that a run can be replayed) and undoes the rest; a clean unmount writes everything.

use std::os::fd::AsFd;

use crate::pending::Rng;
use crate::state::State;

impl State {
    /// The power cut. `p` = None: keep nothing pending.
    pub fn power_cut(&mut self, rng: &mut Rng, p: Option<f64>) -> String {
        self.cut = true;
        let p_keep = p.unwrap_or(0.0);
        let (mut files, mut sectors, mut kept, mut sizes, mut sizes_kept, mut errors) =
            (0, 0, 0, 0, 0, 0);
        let mut inos: Vec<u64> = self.nodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let node = self.nodes.get_mut(&ino).expect("listed");
            let Some(data) = &mut node.data else { continue };
            if data.is_clean() {
                continue;
            }
            files += 1;
            match data.cut(&node.fd.as_fd(), rng, p_keep) {
                Ok(c) => {
                    sectors += c.sectors_pending;
                    kept += c.sectors_kept;
                    sizes += c.size_changed as u64;
                    sizes_kept += c.size_kept as u64;
                }
                Err(e) => {
                    eprintln!("cutfs: cut: writing kept sectors of inode {ino}: {e}");
                    errors += 1;
                }
            }
        }
        let changes = std::mem::take(&mut self.changes);
        let keep_changes = if p.is_some() {
            rng.below(changes.len() as u64 + 1) as usize
        } else {
            0
        };
        for c in &changes[..keep_changes] {
            self.forget_trash(&c.undo);
        }
        for c in changes[keep_changes..].iter().rev() {
            if let Err(e) = self.undo(&c.undo) {
                // Possible only where a later change in another directory was made durable
                // first (see the module comment); never within one directory.
                eprintln!("cutfs: cut: undoing a namespace change failed: {e:?}");
                errors += 1;
            }
        }
        format!(
            "{files} files with unsynced data: {kept} of {sectors} pending sectors kept, \
             {sizes_kept} of {sizes} size changes kept; {keep_changes} of {} namespace changes \
             kept, the rest undone; {errors} errors",
            changes.len()
        )
    }

    /// A clean shutdown: everything pending reaches the backing directory.
    pub fn flush_all(&mut self) {
        for node in self.nodes.values_mut() {
            let Some(p) = &mut node.data else { continue };
            if let Err(e) = p.sync(&node.fd.as_fd()) {
                eprintln!("cutfs: flushing at unmount: {e}");
            }
        }
        let changes = std::mem::take(&mut self.changes);
        for c in &changes {
            self.forget_trash(&c.undo);
        }
    }
}
