"""Quality-adjusted asks: a provider's reputation feeds clearing as a known factor on its ask.

Model (the SLA contract model of the seed survey, section IV.B.3: a delegated task priced with its
quality; here the quality is the provider's reputation r in [0, 1], earned from measured SLA
outcomes and spot checks):

    factor(r)      f = 1 + weight × (1 − r)            weight ≥ 0, so 1 ≤ f ≤ 1 + weight
    effective ask  a_eff = a × f                        what the book clears on
    receipt        p = p_eff / f                        what the provider is paid per device-hour

A spotless provider (r = 1) clears exactly as before; a provider with r < 1 must ask less to win
against a spotless one, and is paid its clearing price deflated by the same factor.

Properties (stated; tested in tests/unit/mechanisms/test_quality.py):

- Truthfulness survives for the reported price when f is fixed and known before the round (it is
  read from the reputation at the snapshot, never from the book). A seller with cost c reporting a
  faces the mechanism with effective ask a·f; its utility p_eff/f − c = (p_eff − c·f)/f is its
  effective-space utility scaled by 1/f > 0. A mechanism that is dominant-strategy truthful for
  sellers (McAfee, trade reduction, VCG) makes a_eff = c·f optimal, i.e. a = c. Reputation itself is
  not a report: it moves only through measured breaches and checks, so it cannot be shaded.
- Individual rationality: p_eff ≥ a_eff (the mechanism's IR) gives p = p_eff/f ≥ a.
- Budget balance: f ≥ 1 gives p = p_eff/f ≤ p_eff ≤ buyer price, so no trade runs a deficit; the
  difference p_eff − p is the platform's, as the mechanism's surplus already is.
- What does not survive: efficiency in true costs (the book maximises welfare in effective costs,
  c·f, which is the point: a worse record is a real expected cost to the buyer), and a provider can
  still gain by improving its reputation — that is the incentive the adjustment exists to give.

Departure from a full quality-aware auction (a buyer's value depending on quality): CPX has one
scalar bid per job, so quality enters on the seller side only, as a known multiplicative factor.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class QualityRule:
    """weight: how much one unit of lost reputation raises the effective ask (0 = off)."""

    weight: float

    def __post_init__(self):
        if not (self.weight >= 0 and self.weight == self.weight and self.weight != float("inf")):
            raise ValueError("weight is a finite number ≥ 0")


def quality_factor(reputation: float, rule: QualityRule) -> float:
    """f = 1 + weight × (1 − r), with r clipped to [0, 1]."""
    r = min(1.0, max(0.0, float(reputation)))
    return 1.0 + rule.weight * (1.0 - r)


def adjusted_ask(ask: float, factor: float) -> float:
    """The effective ask the book clears on: ask × f."""
    return ask * factor


def receipt(effective_price: float, factor: float) -> float:
    """What the provider is paid per device-hour for an effective clearing price: p_eff / f."""
    return effective_price / factor
