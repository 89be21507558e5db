"""modelyard: multi-model AI systems described in one YAML file, run as a library, a CLI and an
OpenAI-compatible gateway.

    import modelyard
    yard = modelyard.load("examples/quickstart.yaml")
    response = await yard.complete("support", "How do I reset my password?")
    print(response.text, response.model, response.cost)
"""

from modelyard.errors import (
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    BudgetExceededError,
    ConfigError,
    ContentFilteredError,
    ContextLengthError,
    ModelError,
    ModelTimeoutError,
    ModelyardError,
    NoAnswerError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    QualityCheckError,
    RateLimitedError,
    StreamInterruptedError,
    UnavailableError,
)
from modelyard.model import Capabilities, Embedder, Model, ModelInfo, Wrapper
from modelyard.streaming import collect
from modelyard.types import (
    ChatRequest,
    ChatResponse,
    Choice,
    Chunk,
    Decision,
    EmbeddingRequest,
    EmbeddingResponse,
    FinishReason,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
    user,
)
from modelyard.yard import SyncYard, Yard, load, load_sync

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BadResponseError",
    "BudgetExceededError",
    "Capabilities",
    "ChatRequest",
    "ChatResponse",
    "Choice",
    "Chunk",
    "ConfigError",
    "ContentFilteredError",
    "ContextLengthError",
    "Decision",
    "Embedder",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "FinishReason",
    "ImagePart",
    "Message",
    "Model",
    "ModelError",
    "ModelInfo",
    "ModelTimeoutError",
    "ModelyardError",
    "NoAnswerError",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "QualityCheckError",
    "RateLimitedError",
    "ResponseFormat",
    "StreamInterruptedError",
    "SyncYard",
    "TextPart",
    "TokenLogprob",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "UnavailableError",
    "Usage",
    "Wrapper",
    "Yard",
    "__version__",
    "collect",
    "load",
    "load_sync",
    "user",
]
