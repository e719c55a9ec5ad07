"""The escalation policy's schema, and loading it with errors that name the line and field."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

Channel = Literal["email", "sms", "call_task", "letter"]
Action = Literal["late_fee", "credit_hold", "notice_of_intent", "external_handoff"]
Tier = Literal["low", "medium", "high", "critical"]


class Level(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9_]{1,32}$")
    day: int = Field(ge=-60, le=365)
    channels: list[Channel] = []
    template: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    actions: list[Action] = []
    min_amount_minor: dict[str, int] = Field(
        default_factory=dict, description="per currency; below it the level does not fire"
    )


class Ladder(BaseModel):
    """An ordered list of levels (the default ladder, or a variant's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    levels: list[Level] = Field(min_length=1)
    # Each level's position by name, built once (every evaluation asks several times).
    _positions: dict[str, int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _ordered(self) -> Ladder:
        days = [lv.day for lv in self.levels]
        if days != sorted(days) or len(set(days)) != len(days):
            raise ValueError("levels must have strictly increasing days")
        names = [lv.name for lv in self.levels]
        if len(set(names)) != len(names):
            raise ValueError("level names must be unique")
        self._positions = {name: i for i, name in enumerate(names)}
        return self

    def level_for(self, day: int) -> Level | None:
        """The highest level whose day has been reached, or None before the first."""
        reached = [lv for lv in self.levels if lv.day <= day]
        return reached[-1] if reached else None

    def next_after(self, level: Level | None) -> Level | None:
        if level is None:
            return self.levels[0]
        idx = self._position_of()[level.name]
        return self.levels[idx + 1] if idx + 1 < len(self.levels) else None

    def index(self, name: str | None) -> int:
        return self._position_of().get(name, -1) if name is not None else -1

    def _position_of(self) -> dict[str, int]:
        # Read from the private attributes' dict itself: ``self._positions`` goes through
        # BaseModel.__getattr__, which costs more than building the list of names did.
        private = self.__pydantic_private__
        assert private is not None
        positions: dict[str, int] = private["_positions"]
        return positions

    def by_name(self, name: str) -> Level:
        for lv in self.levels:
            if lv.name == name:
                return lv
        raise KeyError(name)


class Variant(Ladder):
    """A ladder for some risk tiers and/or customer segments (empty list: any)."""

    name: str = Field(pattern=r"^[a-z0-9_]{1,32}$")
    tiers: list[Tier] = []
    segments: list[str] = []

    def matches(self, tier: str | None, segment: str | None) -> bool:
        return (not self.tiers or tier in self.tiers) and (not self.segments or segment in self.segments)


class Agreements(BaseModel):
    """Written confirmations and the grace given to promises and installments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: list[Literal["email", "sms"]] = ["email"]
    promise_template: str | None = Field(default="promise_confirmation", pattern=r"^[a-z0-9_]{1,64}$")
    plan_template: str | None = Field(default="payment_plan_confirmation", pattern=r"^[a-z0-9_]{1,64}$")
    thank_you_template: str | None = Field(default="thank_you", pattern=r"^[a-z0-9_]{1,64}$")
    promise_grace_days: int = Field(default=1, ge=0, le=30)
    installment_grace_days: int = Field(default=1, ge=0, le=30)
    max_promise_days: int = Field(default=60, ge=1, le=365)


class Policy(Ladder):
    version: int = Field(ge=1)
    name: str
    variants: list[Variant] = []
    agreements: Agreements = Agreements()

    @model_validator(mode="after")
    def _variants_share_names(self) -> Policy:
        names = [lv.name for lv in self.levels]
        for variant in self.variants:
            if [lv.name for lv in variant.levels] != names:
                raise ValueError(
                    f"variant {variant.name!r} must have the same level names, in the same order, as levels: "
                    + ", ".join(names)
                )
        return self

    def ladder(self, tier: str | None, segment: str | None) -> Ladder:
        """The first variant that matches the account's risk tier and segment, else the default ladder."""
        for variant in self.variants:
            if variant.matches(tier, segment):
                return variant
        return self


class PolicyError(ValueError):
    pass


def _line_of(text: str, loc: tuple[str | int, ...]) -> int | None:
    """Best-effort line number of a location path in a YAML document."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if k.value == part]
            if not match:
                return node.start_mark.line + 1
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    return node.start_mark.line + 1 if node is not None else None


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise PolicyError(f"{source}:{where} not valid YAML") from None
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = tuple(err["loc"])
            line = _line_of(text, loc)
            field = ".".join(str(p) for p in loc) or "(document)"
            problems.append(f"{source}: line {line}: {field}: {err['msg']}")
        raise PolicyError("\n".join(problems)) from None


def load_policy(path: str | None) -> Policy:
    if path:
        return parse_policy(Path(path).read_text(), path)
    text = resources.files("arrears_case_manager.policy").joinpath("default.yaml").read_text()
    return parse_policy(text, "default.yaml")
