//! Permissions: (area, action) pairs, the three accepted input forms, and the rules on granting.
//!
//! A [`PermissionSet`] is a bitset (three bits per area), so checking a permission on the
//! verify path is one AND, and sets compare and combine without allocating.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The route where a key reads its own record (any valid key may).
pub const CURRENT_KEY_PATH: &str = "/api/v1/api-keys/current";

/// An action on an area. HTTP methods map onto these (see [`Action::for_method`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    View,
    Edit,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::View, Action::Edit, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::View => "View",
            Action::Edit => "Edit",
            Action::Delete => "Delete",
        }
    }

    /// GET/HEAD → View, POST/PUT/PATCH → Edit, DELETE → Delete (method names case-insensitive).
    pub fn for_method(method: &str) -> Option<Action> {
        const TABLE: [(&str, Action); 6] = [
            ("GET", Action::View),
            ("HEAD", Action::View),
            ("POST", Action::Edit),
            ("PUT", Action::Edit),
            ("PATCH", Action::Edit),
            ("DELETE", Action::Delete),
        ];
        TABLE
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(method))
            .map(|&(_, action)| action)
    }

    /// Parses an action name, case-insensitively.
    pub fn parse(text: &str) -> Option<Action> {
        match text {
            "View" => return Some(Action::View),
            "Edit" => return Some(Action::Edit),
            "Delete" => return Some(Action::Delete),
            _ => {}
        }
        Action::ALL
            .into_iter()
            .find(|action| action.as_str().eq_ignore_ascii_case(text))
    }

    fn bit(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! areas {
    ($($area:ident = $name:literal, $scope:literal, [$($action:ident),*];)*) => {
        /// A resource area of a store (SPEC §2).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Area { $($area),* }

        impl Area {
            /// Every area, in table order.
            pub const ALL: &'static [Area] = &[$(Area::$area),*];

            /// The canonical name, as in the dictionary form (`"GiftCards"`).
            pub fn as_str(self) -> &'static str {
                match self { $(Area::$area => $name),* }
            }

            /// The name used in scope strings (`"gift_cards"`).
            pub fn scope_name(self) -> &'static str {
                match self { $(Area::$area => $scope),* }
            }

            /// The actions this area offers.
            pub fn actions(self) -> &'static [Action] {
                match self { $(Area::$area => &[$(Action::$action),*]),* }
            }

            /// The area named exactly by its canonical or scope name.
            fn exact(text: &str) -> Option<Area> {
                match text {
                    $($name | $scope => Some(Area::$area),)*
                    _ => None,
                }
            }
        }
    };
}

areas! {
    Packages = "Packages", "packages", [View, Edit, Delete];
    Categories = "Categories", "categories", [View, Edit, Delete];
    Coupons = "Coupons", "coupons", [View, Edit, Delete];
    Sales = "Sales", "sales", [View, Edit, Delete];
    GiftCards = "GiftCards", "gift_cards", [View, Edit, Delete];
    Orders = "Orders", "orders", [View, Edit];
    Customers = "Customers", "customers", [View, Edit];
    Bans = "Bans", "bans", [View, Edit, Delete];
    Subscriptions = "Subscriptions", "subscriptions", [View];
    Products = "Products", "products", [View, Edit, Delete];
    ApiKeys = "ApiKeys", "api_keys", [View, Edit, Delete];
}

impl Area {
    /// The path segment of the area's routes under `/api/v1/` (`gift-cards`, `api-keys`).
    pub fn route_segment(self) -> &'static str {
        match self {
            Area::GiftCards => "gift-cards",
            Area::ApiKeys => "api-keys",
            other => other.scope_name(),
        }
    }

    /// The area a keyed API route belongs to, from its first segment after `/api/v1/`
    /// (`/api/v1/orders/ord_1` → Orders). `None` for any other path.
    pub fn for_path(path: &str) -> Option<Area> {
        let segment = path.strip_prefix("/api/v1/")?.split(['/', '?']).next()?;
        Area::ALL
            .iter()
            .copied()
            .find(|area| area.route_segment() == segment)
    }

    /// Parses an area name. Accepts the canonical name and the scope name in any case, with or
    /// without `_`/`-` separators (`GiftCards`, `gift_cards`, `gift-cards`, `giftcards`).
    pub fn parse(text: &str) -> Option<Area> {
        // Verify parses an area on every call; the names callers write are nearly always
        // exact, which a match on the text settles without folding and searching.
        if let Some(area) = Area::exact(text) {
            return Some(area);
        }
        let mut folded = [0u8; 32];
        let mut len = 0;
        for byte in text.bytes() {
            if byte == b'_' || byte == b'-' {
                continue;
            }
            if len == folded.len() {
                return None;
            }
            folded[len] = byte.to_ascii_lowercase();
            len += 1;
        }
        let folded = &folded[..len];
        Area::ALL
            .iter()
            .copied()
            .find(|area| area.as_str().as_bytes().eq_ignore_ascii_case(folded))
    }

    pub fn offers(self, action: Action) -> bool {
        self.actions().contains(&action)
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One (area, action) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permission {
    pub area: Area,
    pub action: Action,
}

impl Permission {
    pub const fn new(area: Area, action: Action) -> Self {
        Self { area, action }
    }

    /// The permission a request to the server's keyed API (`/api/v1/…`) needs: the area of the
    /// path's first segment with the method's action (SPEC §2), except that opening a portal
    /// session needs `Customers:View` (seed 001) and reading the caller's own key
    /// (`GET /api/v1/api-keys/current`) needs only a valid key. `None` also where the method
    /// implies no action; the router answers those 405.
    pub fn for_route(method: &str, path: &str) -> Option<Permission> {
        if path == CURRENT_KEY_PATH && Action::for_method(method) == Some(Action::View) {
            return None;
        }
        if path == "/api/v1/auth/portal-sessions" {
            return Some(crate::portal::PORTAL_PERMISSION);
        }
        Some(Permission::new(
            Area::for_path(path)?,
            Action::for_method(method)?,
        ))
    }

    fn bit(self) -> u64 {
        1u64 << self.index()
    }

    /// A small stable number for the pair (area × 3 + action, in table order), so bindings can
    /// pass a permission as an integer on their hot path. Stable within a release only.
    pub fn index(self) -> u32 {
        self.area as u32 * 3 + self.action.bit()
    }

    /// The pair numbered `index` (see [`Permission::index`]); `None` past the table.
    pub fn from_index(index: u32) -> Option<Permission> {
        let area = *Area::ALL.get(usize::try_from(index / 3).ok()?)?;
        let action = Action::ALL[(index % 3) as usize];
        Some(Permission::new(area, action))
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.area, self.action)
    }
}

/// A normalised set of permissions. Only (area, action) pairs the area offers can be members.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PermissionSet(u64);

impl PermissionSet {
    /// The empty set.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Every permission every area offers (the default key's set, and `"*"`).
    pub fn all() -> Self {
        let mut set = Self::empty();
        for &area in Area::ALL {
            for &action in area.actions() {
                set.insert(Permission::new(area, action));
            }
        }
        set
    }

    /// Adds `permission`; ignored (returns false) when the area does not offer the action.
    pub fn insert(&mut self, permission: Permission) -> bool {
        if !permission.area.offers(permission.action) {
            return false;
        }
        self.0 |= permission.bit();
        true
    }

    #[inline]
    pub fn contains(&self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    pub fn is_subset(&self, other: &PermissionSet) -> bool {
        self.0 & !other.0 == 0
    }

    /// Members of `self` missing from `other`, in table order.
    pub fn difference(&self, other: &PermissionSet) -> Vec<Permission> {
        PermissionSet(self.0 & !other.0).iter().collect()
    }

    /// Members in table order (areas, then View/Edit/Delete).
    pub fn iter(&self) -> impl Iterator<Item = Permission> + '_ {
        Area::ALL.iter().flat_map(move |&area| {
            area.actions()
                .iter()
                .map(move |&action| Permission::new(area, action))
                .filter(|p| self.contains(*p))
        })
    }

    /// The dictionary form: `{"Orders": ["View"], …}` in table order.
    pub fn to_map(&self) -> BTreeMap<Area, Vec<Action>> {
        let mut map: BTreeMap<Area, Vec<Action>> = BTreeMap::new();
        for permission in self.iter() {
            map.entry(permission.area)
                .or_default()
                .push(permission.action);
        }
        map
    }

    /// The scope-string form: `["orders:view", …]`, one string per member.
    pub fn to_scopes(&self) -> Vec<String> {
        self.iter()
            .map(|p| {
                format!(
                    "{}:{}",
                    p.area.scope_name(),
                    p.action.as_str().to_ascii_lowercase()
                )
            })
            .collect()
    }

    /// Normalises any accepted input form into a set, naming every bad entry.
    ///
    /// Accepted: the dictionary form `{"Packages": ["View","Edit"]}`; a list of scope strings
    /// (`"orders:read"` = View, `"orders:write"` = Edit + Delete where offered, also
    /// `"orders:view|edit|delete|*"`); a single scope string; and `"*"` for everything.
    pub fn from_input(input: &Value) -> Result<PermissionSet, Vec<String>> {
        let mut set = PermissionSet::empty();
        let mut problems = Vec::new();
        match input {
            Value::String(text) => set.add_scope(text, &mut problems),
            Value::Array(items) => {
                for item in items {
                    match item {
                        Value::String(text) => set.add_scope(text, &mut problems),
                        other => problems.push(format!(
                            "permissions: scope entries must be strings, got {}",
                            json_kind(other)
                        )),
                    }
                }
            }
            Value::Object(map) => {
                for (area_name, actions) in map {
                    let Some(area) = Area::parse(area_name) else {
                        problems.push(format!("permissions: unknown area `{area_name}`"));
                        continue;
                    };
                    let actions: Vec<&Value> = match actions {
                        Value::Array(items) => items.iter().collect(),
                        Value::String(_) => vec![actions],
                        other => {
                            problems.push(format!(
                                "permissions.{area}: expected a list of actions, got {}",
                                json_kind(other)
                            ));
                            continue;
                        }
                    };
                    for action in actions {
                        let Some(name) = action.as_str() else {
                            problems.push(format!(
                                "permissions.{area}: actions must be strings, got {}",
                                json_kind(action)
                            ));
                            continue;
                        };
                        if name == "*" {
                            for &action in area.actions() {
                                set.insert(Permission::new(area, action));
                            }
                            continue;
                        }
                        match Action::parse(name) {
                            Some(action) if area.offers(action) => {
                                set.insert(Permission::new(area, action));
                            }
                            Some(action) => problems.push(format!(
                                "permissions.{area}: area {area} does not offer {action}"
                            )),
                            None => problems.push(format!(
                                "permissions.{area}: unknown action `{name}` (expected View, Edit or Delete)"
                            )),
                        }
                    }
                }
            }
            other => problems.push(format!(
                "permissions: expected an object of areas, a list of scopes or \"*\", got {}",
                json_kind(other)
            )),
        }
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(problems)
        }
    }

    fn add_scope(&mut self, scope: &str, problems: &mut Vec<String>) {
        if scope.trim() == "*" {
            *self = PermissionSet(self.0 | PermissionSet::all().0);
            return;
        }
        let Some((area_name, level)) = scope.split_once(':') else {
            problems.push(format!(
                "permissions: scope `{scope}` is not of the form `area:read` or `area:write`"
            ));
            return;
        };
        let Some(area) = Area::parse(area_name) else {
            problems.push(format!(
                "permissions: unknown area `{area_name}` in scope `{scope}`"
            ));
            return;
        };
        let wanted: &[Action] = match level.to_ascii_lowercase().as_str() {
            "read" | "view" => &[Action::View],
            // Write means every changing action the area offers.
            "write" => &[Action::Edit, Action::Delete],
            "edit" => &[Action::Edit],
            "delete" => &[Action::Delete],
            "*" => &Action::ALL,
            _ => {
                problems.push(format!(
                    "permissions: unknown access `{level}` in scope `{scope}` (expected read, write, view, edit, delete or *)"
                ));
                return;
            }
        };
        let mut granted = false;
        for &action in wanted {
            granted |= self.insert(Permission::new(area, action));
        }
        if !granted {
            problems.push(format!(
                "permissions: area {area} does not offer `{level}` access"
            ));
        }
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(|p| p.to_string()))
            .finish()
    }
}

impl fmt::Display for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for permission in self.iter() {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{permission}")?;
        }
        Ok(())
    }
}

impl Serialize for PermissionSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let map = self.to_map();
        let mut out = serializer.serialize_map(Some(map.len()))?;
        for (area, actions) in &map {
            let names: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
            out.serialize_entry(area.as_str(), &names)?;
        }
        out.end()
    }
}

impl<'de> Deserialize<'de> for PermissionSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        PermissionSet::from_input(&value).map_err(|problems| D::Error::custom(problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn set(value: Value) -> PermissionSet {
        PermissionSet::from_input(&value).unwrap()
    }

    #[test]
    fn the_servers_routes_need_the_area_and_action_of_their_path_and_method() {
        let need = |method, path| Permission::for_route(method, path);
        let p = Permission::new;
        assert_eq!(
            need("GET", "/api/v1/orders"),
            Some(p(Area::Orders, Action::View))
        );
        assert_eq!(
            need("post", "/api/v1/gift-cards"),
            Some(p(Area::GiftCards, Action::Edit))
        );
        assert_eq!(
            need("DELETE", "/api/v1/bans/ban_1"),
            Some(p(Area::Bans, Action::Delete))
        );
        assert_eq!(
            need("POST", "/api/v1/auth/portal-sessions"),
            Some(p(Area::Customers, Action::View))
        );
        // A key reads itself with no permission; changing "current" is not exempt.
        assert_eq!(need("GET", CURRENT_KEY_PATH), None);
        assert_eq!(need("HEAD", CURRENT_KEY_PATH), None);
        assert_eq!(
            need("DELETE", CURRENT_KEY_PATH),
            Some(p(Area::ApiKeys, Action::Delete))
        );
        assert_eq!(
            need("GET", "/api/v1/api-keys"),
            Some(p(Area::ApiKeys, Action::View))
        );
        // No action for the method, or no area for the path.
        assert_eq!(need("OPTIONS", "/api/v1/orders"), None);
        assert_eq!(need("GET", "/api/v1/nothing"), None);
    }

    #[test]
    fn three_forms_normalise_to_one_set() {
        let dict = set(json!({"Orders": ["View", "Edit"], "Packages": ["View"]}));
        let scopes = set(json!(["orders:read", "orders:edit", "packages:read"]));
        let lenient = set(json!({"orders": ["view", "edit"], "packages": "View"}));
        assert_eq!(dict, scopes);
        assert_eq!(dict, lenient);
        assert_eq!(set(json!("*")), PermissionSet::all());
        assert_eq!(set(json!(["*"])), PermissionSet::all());
    }

    #[test]
    fn write_means_edit_and_delete_where_offered() {
        let packages = set(json!(["packages:write"]));
        assert_eq!(packages, set(json!({"Packages": ["Edit", "Delete"]})));
        // Orders offers no Delete: write grants Edit only and is not an error.
        let orders = set(json!("orders:write"));
        assert_eq!(orders, set(json!({"Orders": ["Edit"]})));
        // Subscriptions are read-only: write grants nothing, which is an error.
        let err = PermissionSet::from_input(&json!(["subscriptions:write"])).unwrap_err();
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(err[0].contains("Subscriptions"), "{err:?}");
    }

    #[test]
    fn every_bad_entry_is_named() {
        let err = PermissionSet::from_input(&json!({
            "Packages": ["View", "Fly"],
            "Warehouses": ["View"],
            "Subscriptions": ["Edit"],
            "Customers": ["Delete"],
            "Orders": 3
        }))
        .unwrap_err();
        let text = err.join("\n");
        assert_eq!(err.len(), 5, "{text}");
        for needle in [
            "Fly",
            "Warehouses",
            "Subscriptions does not offer Edit",
            "Customers does not offer Delete",
            "Orders: expected a list",
        ] {
            assert!(text.contains(needle), "missing {needle} in {text}");
        }
        let err = PermissionSet::from_input(&json!([
            "orders:read",
            "nope:read",
            "orders:fly",
            "orders",
            7
        ]))
        .unwrap_err();
        assert_eq!(err.len(), 4, "{err:?}");
        assert!(PermissionSet::from_input(&json!(12)).is_err());
    }

    #[test]
    fn methods_map_to_actions() {
        assert_eq!(Action::for_method("get"), Some(Action::View));
        assert_eq!(Action::for_method("HEAD"), Some(Action::View));
        for m in ["POST", "PUT", "patch"] {
            assert_eq!(Action::for_method(m), Some(Action::Edit));
        }
        assert_eq!(Action::for_method("DELETE"), Some(Action::Delete));
        assert_eq!(Action::for_method("OPTIONS"), None);
    }

    #[test]
    fn the_table_matches_the_spec() {
        assert_eq!(Area::ALL.len(), 11);
        assert_eq!(Area::Orders.actions(), &[Action::View, Action::Edit]);
        assert_eq!(Area::Customers.actions(), &[Action::View, Action::Edit]);
        assert_eq!(Area::Subscriptions.actions(), &[Action::View]);
        assert_eq!(PermissionSet::all().iter().count(), 8 * 3 + 2 + 2 + 1);
        let mut s = PermissionSet::empty();
        assert!(!s.insert(Permission::new(Area::Subscriptions, Action::Delete)));
        assert!(s.is_empty());
    }

    #[test]
    fn subset_and_difference() {
        let small = set(json!({"Orders": ["View"]}));
        let big = set(json!({"Orders": ["View", "Edit"], "Bans": ["View"]}));
        assert!(small.is_subset(&big));
        assert!(!big.is_subset(&small));
        let missing: Vec<String> = big
            .difference(&small)
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(missing, ["Orders:Edit", "Bans:View"]);
    }

    fn any_set() -> impl Strategy<Value = PermissionSet> {
        let members: Vec<Permission> = PermissionSet::all().iter().collect();
        proptest::collection::vec(any::<bool>(), members.len()).prop_map(move |bits| {
            let mut set = PermissionSet::empty();
            for (p, on) in members.iter().zip(bits) {
                if on {
                    set.insert(*p);
                }
            }
            set
        })
    }

    proptest! {
        #[test]
        fn dictionary_form_round_trips(s in any_set()) {
            let printed = serde_json::to_value(s).unwrap();
            prop_assert_eq!(PermissionSet::from_input(&printed).unwrap(), s);
            let again: PermissionSet = serde_json::from_value(printed.clone()).unwrap();
            prop_assert_eq!(serde_json::to_value(again).unwrap(), printed);
        }

        #[test]
        fn scope_form_round_trips(s in any_set()) {
            let scopes = serde_json::to_value(s.to_scopes()).unwrap();
            prop_assert_eq!(PermissionSet::from_input(&scopes).unwrap(), s);
        }

        #[test]
        fn display_lists_members_in_table_order(s in any_set()) {
            let shown = s.to_string();
            let expected: Vec<String> = s.iter().map(|p| p.to_string()).collect();
            prop_assert_eq!(shown, expected.join(", "));
        }

        #[test]
        fn arbitrary_json_never_panics(text in ".{0,40}") {
            let _ = PermissionSet::from_input(&Value::String(text.clone()));
            let _ = PermissionSet::from_input(&serde_json::json!({ text: ["View"] }));
        }
    }
}
