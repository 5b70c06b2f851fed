"""What verification found: one :class:`Check` per (shape, optimisation level, oracle)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Check:
    oracle: str
    shape: dict[str, int]
    opt_level: str
    status: str  # passed | failed | unverified
    max_abs: float | None = None
    max_rel: float | None = None
    seconds: float = 0.0
    note: str = ""


@dataclass
class VerifyReport:
    checks: list[Check] = field(default_factory=list)
    provider: str = "CPUExecutionProvider"
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    tolerances: dict[str, dict] = field(default_factory=dict)  # per level and output: rtol, atol and why
    float_inputs: str = ""  # the distribution float check inputs were drawn from
    memory: dict = field(default_factory=dict)  # what the checks hold, and the process's peak RSS

    @property
    def ok(self) -> bool:
        return all(c.status != "failed" for c in self.checks)

    def as_dict(self) -> dict:
        return {"provider": self.provider, "ok": self.ok, "checks": [asdict(c) for c in self.checks],
                "timings": {k: round(v, 4) for k, v in self.timings.items()}, "tolerances": self.tolerances,
                "float_inputs": self.float_inputs, "memory": self.memory}
