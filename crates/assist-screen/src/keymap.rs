//! Typing a keysym on the sharer's keyboard layout: which keycode, and which Shift and AltGr
//! (ISO_Level3_Shift) state it needs. Pure: the X11 backend reads the tables and the state from
//! the server and applies the [`Plan`].
//!
//! The helper's page sends the character the helper typed (`"H"`, `":"`, `"\\"`), often without
//! the Shift press that produced it (pasted text, input methods, another keyboard layout on the
//! helper's side). Pressing the keycode of `H` alone gives `h` on the sharer's screen, and on a
//! German layout `\` needs AltGr. So a character key is pressed with the levels its column needs,
//! and the modifiers are put back as they were right after the press.
//!
//! The core keyboard mapping an XKB server publishes has, per keycode, the columns group 1 level
//! 1, group 1 level 2 (Shift), group 2 levels 1 and 2, then group 1 level 3 (AltGr) and level 4
//! (AltGr+Shift). Only group 1 is used: a keysym found nowhere else is bound to a spare keycode
//! by the backend (every column the same keysym, so no modifier matters).

/// `ISO_Level3_Shift`, the AltGr key's keysym on XKB layouts.
pub const ISO_LEVEL3_SHIFT: u32 = 0xfe03;

/// The modifier state a column needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Level {
    /// Shift held.
    pub shift: bool,
    /// AltGr (level 3) held.
    pub level3: bool,
}

/// Which keycode types a keysym, at which level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyChoice {
    /// The keycode.
    pub keycode: u8,
    /// The modifiers its column needs.
    pub level: Level,
}

/// The server's keyboard mapping (`GetKeyboardMapping`) and modifier mapping
/// (`GetModifierMapping`).
#[derive(Clone, Debug)]
pub struct Keymap {
    min_keycode: u8,
    per_keycode: usize,
    keysyms: Vec<u32>,
    per_modifier: usize,
    modifiers: Vec<u8>,
}

/// Columns of group 1 in preference order, with the level each needs.
const COLUMNS: [(usize, Level); 4] = [
    (
        0,
        Level {
            shift: false,
            level3: false,
        },
    ),
    (
        1,
        Level {
            shift: true,
            level3: false,
        },
    ),
    (
        4,
        Level {
            shift: false,
            level3: true,
        },
    ),
    (
        5,
        Level {
            shift: true,
            level3: true,
        },
    ),
];

/// Index of Shift in the modifier mapping.
const SHIFT_ROW: usize = 0;

impl Keymap {
    /// `keysyms` holds `per_keycode` keysyms per keycode from `min_keycode`; `modifiers` holds
    /// `per_modifier` keycodes (0 = none) for each of the 8 modifiers, Shift first.
    pub fn new(
        min_keycode: u8,
        per_keycode: u8,
        keysyms: Vec<u32>,
        per_modifier: u8,
        modifiers: Vec<u8>,
    ) -> Keymap {
        Keymap {
            min_keycode,
            per_keycode: usize::from(per_keycode.max(1)),
            keysyms,
            per_modifier: usize::from(per_modifier),
            modifiers,
        }
    }

    fn keycode_at(&self, index: usize) -> Option<u8> {
        u8::try_from(usize::from(self.min_keycode) + index).ok()
    }

    fn row(&self, modifier: usize) -> &[u8] {
        let start = modifier * self.per_modifier;
        self.modifiers
            .get(start..start + self.per_modifier)
            .unwrap_or(&[])
    }

    /// How many keycodes the mapping covers.
    pub fn keycode_count(&self) -> usize {
        self.keysyms.len() / self.per_keycode
    }

    /// Keysyms per keycode.
    pub fn per_keycode(&self) -> usize {
        self.per_keycode
    }

    /// The keycodes with no keysym at all, highest first (low ones are real keys).
    pub fn unbound_keycodes(&self) -> Vec<u8> {
        let mut free: Vec<u8> = self
            .keysyms
            .chunks(self.per_keycode)
            .enumerate()
            .filter(|(_, syms)| syms.iter().all(|&s| s == 0))
            .filter_map(|(i, _)| self.keycode_at(i))
            .collect();
        free.reverse();
        free
    }

    /// Records that every column of `keycode` now holds `keysym` (0: unbound), as the backend's
    /// `ChangeKeyboardMapping` made it on the server.
    pub fn set(&mut self, keycode: u8, keysym: u32) {
        let per = self.per_keycode;
        let k = usize::from(keycode.saturating_sub(self.min_keycode));
        if let Some(slot) = self.keysyms.get_mut(k * per..(k + 1) * per) {
            slot.fill(keysym);
        }
    }

    /// Whether `keycode` is a modifier key (in any row of the modifier mapping).
    pub fn is_modifier(&self, keycode: u8) -> bool {
        keycode != 0 && self.modifiers.contains(&keycode)
    }

    /// The keycode and level that type `keysym` in group 1, lowest level first.
    pub fn find(&self, keysym: u32) -> Option<KeyChoice> {
        if keysym == 0 {
            return None;
        }
        for (column, level) in COLUMNS {
            if column >= self.per_keycode {
                continue;
            }
            let found = self
                .keysyms
                .chunks(self.per_keycode)
                .position(|syms| syms.get(column) == Some(&keysym));
            if let Some(keycode) = found.and_then(|i| self.keycode_at(i)) {
                return Some(KeyChoice { keycode, level });
            }
        }
        None
    }

    /// The Shift keycodes (the modifier mapping's Shift row).
    pub fn shift_keys(&self) -> Vec<u8> {
        self.row(SHIFT_ROW)
            .iter()
            .copied()
            .filter(|&k| k != 0)
            .collect()
    }

    /// The AltGr keycodes: the modifier row holding a keycode bound to `ISO_Level3_Shift`
    /// (Mod5 on XKB layouts), first the `ISO_Level3_Shift` keys themselves.
    pub fn level3_keys(&self) -> Vec<u8> {
        let level3: Vec<u8> = self
            .keysyms
            .chunks(self.per_keycode)
            .enumerate()
            .filter(|(_, syms)| syms.contains(&ISO_LEVEL3_SHIFT))
            .filter_map(|(i, _)| self.keycode_at(i))
            .collect();
        let Some(row) = (1..8).find(|&m| self.row(m).iter().any(|k| level3.contains(k))) else {
            return Vec::new();
        };
        let mut keys: Vec<u8> = level3
            .iter()
            .copied()
            .filter(|k| self.row(row).contains(k))
            .collect();
        for &k in self.row(row) {
            if k != 0 && !keys.contains(&k) {
                keys.push(k);
            }
        }
        keys
    }
}

/// Whether typing `keysym` should be given the levels of its column: characters yes; function,
/// cursor and modifier keys (keysyms 0xfe00 to 0xffff) no, so that Shift+Arrow still selects.
pub fn is_character(keysym: u32) -> bool {
    keysym != 0 && !(0xfe00..=0xffff).contains(&keysym)
}

/// Whether a keysym is a letter that Caps Lock turns to the other case (Latin-1 letters).
fn caps_lock_affects(keysym: u32) -> bool {
    matches!(keysym, 0x41..=0x5a | 0x61..=0x7a | 0xc0..=0xd6 | 0xd8..=0xde | 0xe0..=0xf6 | 0xf8..=0xfe)
}

/// What is held on the sharer's keyboard now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Keycodes down (`QueryKeymap`).
    pub keys: Vec<u8>,
    /// Caps Lock is on (the Lock bit of the modifier state).
    pub caps_lock: bool,
    /// Control, Alt or Super is held: a shortcut. Shift the character does not need is then
    /// left down (macOS browsers report Cmd+Shift+Z as `z`), only missing levels are added.
    pub shortcut: bool,
}

/// Key presses and releases around one key press, as `(keycode, down)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Before pressing the key.
    pub before: Vec<(u8, bool)>,
    /// Right after pressing it: undoes `before`, in reverse order.
    pub after: Vec<(u8, bool)>,
}

/// The modifier changes that give `keysym`, typed with `choice`, the level it needs, or `None`
/// if a modifier it needs has no key on this keyboard (the backend then binds the keysym to a
/// spare keycode instead).
pub fn plan(keymap: &Keymap, keysym: u32, choice: KeyChoice, held: &Held) -> Option<Plan> {
    let mut want = choice.level;
    if held.caps_lock && caps_lock_affects(keysym) {
        want.shift = !want.shift;
    }
    let mut plan = Plan::default();
    for (wanted, keys) in [
        (want.shift, keymap.shift_keys()),
        (want.level3, keymap.level3_keys()),
    ] {
        let down: Vec<u8> = keys
            .iter()
            .copied()
            .filter(|k| held.keys.contains(k))
            .collect();
        match (wanted, down.is_empty()) {
            (true, true) => {
                let key = *keys.first()?;
                plan.before.push((key, true));
            }
            (false, false) if !held.shortcut => {
                plan.before.extend(down.iter().map(|&k| (k, false)))
            }
            _ => {}
        }
    }
    plan.after = plan
        .before
        .iter()
        .rev()
        .map(|&(key, down)| (key, !down))
        .collect();
    Some(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SHIFT_L: u8 = 50;
    const SHIFT_R: u8 = 62;
    const ALTGR: u8 = 108;

    /// A few keys of a German layout, as Xvfb publishes it (6 columns shown).
    fn german() -> Keymap {
        let min = 8u8;
        let per = 6usize;
        let mut syms = vec![0u32; (255 - usize::from(min) + 1) * per];
        let mut put = |kc: u8, cols: [u32; 6]| {
            let i = usize::from(kc - min) * per;
            syms[i..i + per].copy_from_slice(&cols);
        };
        put(24, [0x71, 0x51, 0x71, 0x51, 0x40, 0x7d9]); // q Q q Q at Greek_OMEGA
        put(20, [0xdf, 0x3f, 0xdf, 0x3f, 0x5c, 0xbf]); // ssharp question … backslash questiondown
        put(60, [0x2e, 0x3a, 0x2e, 0x3a, 0, 0]); // period colon
        put(65, [0x20, 0, 0x20, 0, 0, 0]); // space
        put(SHIFT_L, [0xffe1, 0, 0xffe1, 0, 0, 0]);
        put(SHIFT_R, [0xffe2, 0, 0xffe2, 0, 0, 0]);
        put(ALTGR, [ISO_LEVEL3_SHIFT, 0, ISO_LEVEL3_SHIFT, 0, 0, 0]);
        put(113, [0xff51, 0, 0xff51, 0, 0, 0]); // Left
                                                // Shift: 50, 62; Lock: 66; Control: 37; Mod1: 64; Mod2: 77; Mod3: -; Mod4: 133; Mod5: 92, 108.
        let modifiers = vec![
            SHIFT_L, SHIFT_R, 66, 0, 37, 0, 64, 0, 77, 0, 0, 0, 133, 0, 92, ALTGR,
        ];
        Keymap::new(min, per as u8, syms, 2, modifiers)
    }

    fn choice(keycode: u8, shift: bool, level3: bool) -> Option<KeyChoice> {
        Some(KeyChoice {
            keycode,
            level: Level { shift, level3 },
        })
    }

    #[test]
    fn finds_the_lowest_level_in_group_one() {
        let k = german();
        assert_eq!(k.find(0x71), choice(24, false, false)); // q
        assert_eq!(k.find(0x51), choice(24, true, false)); // Q
        assert_eq!(k.find(0x40), choice(24, false, true)); // @ is AltGr+q
        assert_eq!(k.find(0x7d9), choice(24, true, true));
        assert_eq!(k.find(0x5c), choice(20, false, true)); // \ is AltGr+ß
        assert_eq!(k.find(0x3f), choice(20, true, false)); // ? is Shift+ß
        assert_eq!(k.find(0x3a), choice(60, true, false)); // : is Shift+.
        assert_eq!(k.find(0x20ac), None); // not on these keys: the backend binds a spare
        assert_eq!(k.find(0), None);
    }

    #[test]
    fn modifier_keys_come_from_the_modifier_mapping() {
        let k = german();
        assert_eq!(k.shift_keys(), vec![SHIFT_L, SHIFT_R]);
        // The ISO_Level3_Shift key first, then the rest of its row (Mod5).
        assert_eq!(k.level3_keys(), vec![ALTGR, 92]);
        assert!(k.is_modifier(SHIFT_L) && k.is_modifier(ALTGR) && !k.is_modifier(24));
    }

    #[test]
    fn presses_what_is_missing_and_releases_it_after() {
        let k = german();
        let none = Held::default();
        let p = plan(&k, 0x51, k.find(0x51).unwrap(), &none).unwrap();
        assert_eq!(p.before, vec![(SHIFT_L, true)]);
        assert_eq!(p.after, vec![(SHIFT_L, false)]);
        let p = plan(&k, 0x5c, k.find(0x5c).unwrap(), &none).unwrap();
        assert_eq!(p.before, vec![(ALTGR, true)]);
        let p = plan(&k, 0x7d9, k.find(0x7d9).unwrap(), &none).unwrap();
        assert_eq!(p.before, vec![(SHIFT_L, true), (ALTGR, true)]);
        assert_eq!(p.after, vec![(ALTGR, false), (SHIFT_L, false)]);
        let p = plan(&k, 0x71, k.find(0x71).unwrap(), &none).unwrap();
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn lifts_a_held_shift_the_character_must_not_have_and_puts_it_back() {
        let k = german();
        let held = Held {
            keys: vec![SHIFT_R, 24],
            ..Held::default()
        };
        let p = plan(&k, 0x71, k.find(0x71).unwrap(), &held).unwrap();
        assert_eq!(p.before, vec![(SHIFT_R, false)]);
        assert_eq!(p.after, vec![(SHIFT_R, true)]);
        // Shift already held for Q: nothing to do.
        let p = plan(&k, 0x51, k.find(0x51).unwrap(), &held).unwrap();
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn a_shortcut_keeps_its_shift_and_still_gets_missing_levels() {
        let k = german();
        let ctrl_shift = Held {
            keys: vec![37, SHIFT_L],
            shortcut: true,
            ..Held::default()
        };
        // Ctrl+Shift+z as macOS reports it: Shift stays down.
        assert_eq!(
            plan(&k, 0x71, k.find(0x71).unwrap(), &ctrl_shift).unwrap(),
            Plan::default()
        );
        let ctrl = Held {
            keys: vec![37],
            shortcut: true,
            ..Held::default()
        };
        let p = plan(&k, 0x51, k.find(0x51).unwrap(), &ctrl).unwrap();
        assert_eq!(p.before, vec![(SHIFT_L, true)]);
    }

    #[test]
    fn caps_lock_inverts_shift_for_letters_only() {
        let k = german();
        let caps = Held {
            caps_lock: true,
            ..Held::default()
        };
        // Q with Caps Lock on: no Shift (Shift would give q).
        assert_eq!(
            plan(&k, 0x51, k.find(0x51).unwrap(), &caps).unwrap(),
            Plan::default()
        );
        let p = plan(&k, 0x71, k.find(0x71).unwrap(), &caps).unwrap();
        assert_eq!(p.before, vec![(SHIFT_L, true)]);
        // ':' is not a letter: Shift as usual.
        let p = plan(&k, 0x3a, k.find(0x3a).unwrap(), &caps).unwrap();
        assert_eq!(p.before, vec![(SHIFT_L, true)]);
    }

    #[test]
    fn a_missing_altgr_key_means_no_plan() {
        let mut k = german();
        let altgr_row = 7 * 2;
        k.modifiers[altgr_row] = 0;
        k.modifiers[altgr_row + 1] = 0;
        assert!(k.level3_keys().is_empty());
        assert_eq!(
            plan(&k, 0x5c, k.find(0x5c).unwrap(), &Held::default()),
            None
        );
    }

    #[test]
    fn binding_a_spare_keycode() {
        let mut k = german();
        let spare = k.unbound_keycodes()[0];
        assert_eq!(spare, 255);
        k.set(spare, 0x20ac);
        assert_eq!(k.find(0x20ac), choice(spare, false, false));
        assert_eq!(k.unbound_keycodes()[0], 254);
        k.set(spare, 0);
        assert_eq!(k.find(0x20ac), None);
    }

    #[test]
    fn function_keys_are_not_characters() {
        assert!(is_character(0x48) && is_character(0x5c) && is_character(0x10020ac));
        assert!(!is_character(0xff51) && !is_character(0xffe1) && !is_character(ISO_LEVEL3_SHIFT));
    }

    proptest! {
        /// Whatever is held, `after` undoes `before` exactly, and during the press the
        /// modifiers are the ones the column needs.
        #[test]
        fn after_restores_what_before_changed(
            keysym in prop::sample::select(vec![0x71u32, 0x51, 0x40, 0x7d9, 0x5c, 0x3f, 0x3a, 0x2e, 0x20]),
            held_keys in prop::collection::vec(prop::sample::select(vec![SHIFT_L, SHIFT_R, ALTGR, 92, 24, 37]), 0..4),
            caps_lock in any::<bool>(),
        ) {
            let k = german();
            let held = Held { keys: held_keys.clone(), caps_lock, shortcut: false };
            let c = k.find(keysym).unwrap();
            let p = plan(&k, keysym, c, &held).unwrap();
            let mut keys: std::collections::BTreeSet<u8> = held_keys.iter().copied().collect();
            let original = keys.clone();
            for &(key, down) in &p.before {
                if down { keys.insert(key); } else { keys.remove(&key); }
            }
            let shift = k.shift_keys().iter().any(|x| keys.contains(x));
            let level3 = k.level3_keys().iter().any(|x| keys.contains(x));
            let want_shift = c.level.shift ^ (caps_lock && caps_lock_affects(keysym));
            prop_assert_eq!((shift, level3), (want_shift, c.level.level3));
            for &(key, down) in &p.after {
                if down { keys.insert(key); } else { keys.remove(&key); }
            }
            prop_assert_eq!(keys, original);
        }
    }
}
