"""What the network is and how good it is: the learned model, and its live scores."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from service.api.deps import READ_PROBLEMS, EngineDep, parse_ticker
from service.api.routes.predictions import TICKER_LIST

router = APIRouter(tags=["model"], responses=READ_PROBLEMS)


class Skipped(BaseModel):
    nonfinite: int = Field(description="updates whose loss or gradient was not finite")
    outlier: int = Field(description="updates whose loss exceeded LEARN_MAX_LOSS_RATIO x the "
                         "running loss")


class Learning(BaseModel):
    on: bool = Field(description="LEARN: the weights learn from the stream")
    window: int = Field(description="LEARN_WINDOW: ticks per training chunk")
    batch: int = Field(description="LEARN_BATCH: chunks per optimizer step")
    rate: float = Field(description="LEARN_RATE (Adam)")
    clipnorm: float = Field(description="LEARN_CLIPNORM: global gradient norm cap")
    max_loss_ratio: float = Field(description="LEARN_MAX_LOSS_RATIO")


class ModelInfo(BaseModel):
    base_version: str = Field(description="the artifact's model_version")
    model_version: str = Field(description="<base>+<updates> once the weights have learned")
    updates: int = Field(description="optimizer steps applied")
    skipped: Skipped
    running_loss: float | None = Field(description="exponentially weighted training loss "
                                       "(normalised units); null before the first update")
    learning: Learning
    eval_halflife: float = Field(description="EVAL_HALFLIFE, in a ticker's ticks")


@router.get("/v1/model", response_model=ModelInfo)
async def model(engine: EngineDep) -> ModelInfo:
    """The weights being served, how many updates made them, and the learning settings."""
    return ModelInfo(**engine.model_info())


class QualityOut(BaseModel):
    scored: int = Field(description="predictions scored against their realised return")
    mse_model: float | None = Field(description="model's MSE, exponentially weighted "
                                    "(half-life EVAL_HALFLIFE ticks)")
    mse_zero: float | None = Field(description="the zero forecast's (random walk) MSE, "
                                   "weighted alike")
    skill: float | None = Field(description="1 - mse_model / mse_zero: > 0 beats the zero "
                                "forecast")
    mse_model_total: float | None = Field(description="model's MSE since start")
    mse_zero_total: float | None = Field(description="zero forecast's MSE since start")
    skill_total: float | None = Field(description="skill since start")
    sign_hit_rate: float | None = Field(description="share of non-zero returns whose sign "
                                        "the prediction called")


class QualityReport(BaseModel):
    overall: QualityOut = Field(description="all tickers: since-start figures pooled over "
                                "every scored tick; the weighted ones averaged over tickers")
    tickers: dict[str, QualityOut]
    unknown: list[str] = Field(description="requested tickers not scored yet")


@router.get("/v1/quality", response_model=QualityReport)
async def quality(
    engine: EngineDep,
    tickers: Annotated[str | None, Query(pattern=TICKER_LIST,
                                         description="comma list, e.g. AAPL,msft")] = None,
    per_ticker: Annotated[bool, Query(description="false: only `overall` (cheap to poll "
                                      "with thousands of tickers)")] = True,
) -> QualityReport:
    """Live scores, test-then-train: each prediction is scored when its ticker's next tick
    arrives, before anything learns from that tick. Overall and per ticker."""
    if not per_ticker:
        wanted = []
    elif tickers:
        wanted = [parse_ticker(t.strip(" ")) for t in tickers.split(",")]
    else:
        wanted = list(engine.tickers())
    found = {t: q for t in wanted if (q := engine.quality(t)) is not None}
    return QualityReport(overall=QualityOut(**asdict(engine.scores.overall())),
                         tickers={t: QualityOut(**asdict(q)) for t, q in found.items()},
                         unknown=[t for t in wanted if t not in found])
