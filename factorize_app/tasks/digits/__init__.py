"""Handwritten digit recognition, a real scikit-learn model: its declaration. The model and its
dependencies (`requirements.txt`: scikit-learn, numpy) are in `model.py`, imported only by workers
of the digits queue; this module needs only the service's own requirements, so the web server
always routes `/digits`."""

from rest_framework import serializers

from factorize_app.tasks.deployment import Deployment
from factorize_app.tasks.digits.reading import check_digit_image
from factorize_app.tasks.fields import FileInput
from factorize_app.tasks.registry import TaskType

PIXELS, GREY_LEVELS = 64, 16
# The first image of scikit-learn's bundled digits data: a handwritten 0.
ZERO = (0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0, 8, 8, 0,
        0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0)


class DigitsInput(serializers.Serializer):
    pixels = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=GREY_LEVELS),
        min_length=PIXELS,
        max_length=PIXELS,
        required=False,
        help_text="An 8x8 grey-level image, row by row: 64 integers from 0 (white) to 16 (black), "
        "as in scikit-learn's bundled digits data. Or send `image` instead.",
    )
    image = FileInput(
        content_types=("image/png", "image/jpeg"),
        check=check_digit_image,
        required=False,
        help_text="Or a PNG or JPEG of one handwritten digit, of any reasonable size (at most 25 million "
        "pixels): greyscaled, cropped and scaled to 8x8 as the training data. A data: URI, an http(s) URL, "
        "or an upload's id or URL (POST /files).",
    )

    def validate(self, attrs):
        if ("pixels" in attrs) == ("image" in attrs):
            message = "Send exactly one of `pixels` and `image`."
            raise serializers.ValidationError({"pixels": [message], "image": [message]})
        return attrs


class DigitsResult(serializers.Serializer):
    digit = serializers.IntegerField(help_text="The digit the image most likely shows (0-9).")
    probabilities = serializers.ListField(
        child=serializers.FloatField(), help_text="The probability of each digit, 0 to 9."
    )


TASK_TYPE = TaskType(
    name="digits",
    path="digits",
    description="Recognize a handwritten digit in an 8x8 image or a PNG/JPEG file, with a scikit-learn classifier "
    "each worker loads once.",
    input_serializer=DigitsInput,
    result_serializer=DigitsResult,
    implementation="factorize_app.tasks.digits.model:DigitsClassifier",
    examples=({"pixels": list(ZERO)},),
    requirements="factorize_app/tasks/digits/requirements.txt",
    max_batch_size=128,  # one predict_proba call for up to 128 images, waiting up to 10 ms to fill it
    # About 170 MiB with the model loaded, after a batch of 100 images (measured). Runs on a CPU; the
    # GPU is opt-in (`docker compose --profile gpu`), as most real models want one. A batch call
    # classifies many images at once: one worker per 50 waiting jobs, scaled to zero when idle.
    deployment=Deployment(memory="512Mi", memory_request="256Mi", gpu=1, max_workers=5, jobs_per_worker=50),
)
