//! Money: integer minor units and an ISO 4217 currency code (SPEC appendix).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::input::{Fields, integer, string};

/// The largest amount accepted, in minor units: far above any real price, far below where sums
/// of many lines could overflow an `i64`.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

/// An amount of money: `{"amount": <minor units>, "currency": "USD"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// Minor units (cents for USD), never negative.
    pub amount: i64,
    /// The ISO 4217 code, upper case.
    pub currency: String,
}

impl Money {
    pub fn new(amount: i64, currency: &str) -> Self {
        Self {
            amount,
            currency: currency.to_owned(),
        }
    }

    /// Reads `{amount, currency}`, naming every problem.
    pub(crate) fn from_json(value: &Value) -> Result<Money, Vec<String>> {
        let mut fields = Fields::new(value, "money").map_err(|e| e.problems())?;
        let amount = fields.required("amount", amount);
        let currency = fields.required("currency", currency_code);
        let problems = fields.finish();
        match (problems.finish(), amount, currency) {
            (Ok(()), Some(amount), Some(currency)) => Ok(Money { amount, currency }),
            (Err(err), ..) => Err(err.problems()),
            _ => Err(vec!["expected {amount, currency}".to_owned()]),
        }
    }
}

/// A non-negative amount of minor units.
pub(crate) fn amount(value: &Value) -> Result<i64, String> {
    let amount = integer(value).map_err(|_| "expected an integer number of minor units")?;
    if !(0..=MAX_AMOUNT).contains(&amount) {
        return Err(format!("must be between 0 and {MAX_AMOUNT} minor units"));
    }
    Ok(amount)
}

/// An ISO 4217 currency code (case-insensitive on input, upper case stored).
pub(crate) fn currency_code(value: &Value) -> Result<String, String> {
    let text = string(value)?;
    let upper = text.trim().to_ascii_uppercase();
    iso_currency::Currency::from_code(&upper)
        .map(|c| c.code().to_owned())
        .ok_or_else(|| format!("`{text}` is not an ISO 4217 currency code"))
}

/// `amount * percent / 100`, rounded half up (amounts are never negative).
pub(crate) fn percent_of(amount: i64, percent: i64) -> i64 {
    let scaled = i128::from(amount) * i128::from(percent);
    i64::try_from((scaled + 50) / 100).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn money_names_every_problem() {
        assert_eq!(
            Money::from_json(&json!({"amount": 1999, "currency": "usd"})).unwrap(),
            Money::new(1999, "USD")
        );
        let err = Money::from_json(&json!({"amount": -1, "currency": "XYZ", "x": 1})).unwrap_err();
        assert_eq!(err.len(), 3, "{err:#?}");
        for (problem, needle) in err
            .iter()
            .zip(["amount: ", "currency: `XYZ`", "x: unknown"])
        {
            assert!(problem.starts_with(needle), "{err:#?}");
        }
        assert!(Money::from_json(&json!({"amount": 1.5, "currency": "EUR"})).is_err());
        assert!(Money::from_json(&json!(5)).is_err());
    }

    #[test]
    fn percentages_round_half_up() {
        assert_eq!(percent_of(999, 10), 100); // 99.9
        assert_eq!(percent_of(5, 10), 1); // 0.5
        assert_eq!(percent_of(4, 10), 0); // 0.4
        assert_eq!(percent_of(1000, 100), 1000);
        assert_eq!(percent_of(MAX_AMOUNT, 100), MAX_AMOUNT);
    }
}
