//! Discounts, shared by coupons and sales.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::Result;
use crate::input::{Fields, integer, string};
use crate::money::{self, percent_of};

/// A price reduction: a percentage (0–100) or a fixed amount in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Discount {
    Percentage { value: i64 },
    Fixed { value: i64, currency: String },
}

impl Discount {
    pub(crate) fn from_json(value: &Value) -> Result<Discount, Vec<String>> {
        let mut f = Fields::new(value, "discount").map_err(|e| e.problems())?;
        let names_currency = value.get("currency").is_some();
        let kind = f.required("type", string);
        let amount = f.required("value", integer);
        let currency = f.optional("currency", money::currency_code);
        let mut problems = f.finish();
        let discount = match (kind.as_deref(), amount) {
            (Some("percentage"), Some(value)) => {
                if !(0..=100).contains(&value) {
                    problems.push("value: a percentage must be from 0 to 100");
                }
                if currency.is_some() {
                    problems.push("currency: only a fixed discount has a currency");
                }
                Some(Discount::Percentage { value })
            }
            (Some("fixed"), Some(value)) => {
                if let Err(problem) = money::amount(&json!(value)) {
                    problems.push(format!("value: {problem}"));
                }
                match currency {
                    Some(currency) => Some(Discount::Fixed { value, currency }),
                    None => {
                        // A currency given badly has its own problem already.
                        if !names_currency {
                            problems.push("currency: is required for a fixed discount");
                        }
                        None
                    }
                }
            }
            (Some(other), _) if other != "percentage" && other != "fixed" => {
                problems.push(format!(
                    "type: unknown `{other}` (expected percentage or fixed)"
                ));
                None
            }
            _ => None,
        };
        problems.finish().map_err(|e| e.problems())?;
        discount.ok_or_else(|| vec!["expected {type, value}".to_owned()])
    }

    /// How much comes off `amount` (never more than it). A fixed discount in another
    /// currency is an error.
    pub(crate) fn off(&self, amount: i64, currency: &str) -> Result<i64, String> {
        match self {
            Discount::Percentage { value } => Ok(percent_of(amount, *value).min(amount)),
            Discount::Fixed {
                value,
                currency: own,
            } if own == currency => Ok((*value).min(amount)),
            Discount::Fixed { currency: own, .. } => {
                Err(format!("the discount is in {own}, the order in {currency}"))
            }
        }
    }
}
