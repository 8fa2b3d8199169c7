"""The settings of where jobs' files live (uploads, file inputs, file and large outputs): a directory
shared by the web and the workers, or S3-compatible object storage, and how often expired ones go."""

from project.environment.kinds import INT, NUMBER, TEXT, URL, above, at_least, choice
from project.environment.setting import DJANGO, Section, Setting

FILES = Section(
    "File storage",
    DJANGO,
    "Jobs' files (uploads, file inputs and outputs, results too large for Redis) live outside Redis, in "
    "Django's storage `job_files`; Redis keeps only their records ([Storage](files-storage.md)). A storage "
    "that fails (disk full, bucket unreachable) answers 503 naming it.",
    (
        Setting("FILES_STORAGE", choice("filesystem", "s3"), "filesystem", "`filesystem`: a directory "
                "(`FILES_DIR`) that the web server and every worker share (one host, or a ReadWriteMany "
                "volume); `s3`: a bucket of S3-compatible object storage (AWS S3, MinIO, Ceph, R2...) "
                "through django-storages, for deployments beyond one machine."),
        Setting("FILES_DIR", TEXT, None, "`filesystem`: the directory, an absolute path (the image sets "
                "`/data/files`, a named volume in Compose and a PersistentVolumeClaim in Kubernetes).",
                default_text="`.run/files` in the project", env_file=False),
        Setting("FILES_S3_BUCKET", TEXT, "", "`s3`: the bucket (required); it must exist."),
        Setting("FILES_S3_ENDPOINT_URL", URL, "", "`s3`: the endpoint of an S3-compatible service, e.g. "
                "`http://minio:9000`. Empty: AWS S3."),
        Setting("FILES_S3_REGION", TEXT, "", "`s3`: the bucket's region (empty: boto3's default)."),
        Setting("FILES_S3_ACCESS_KEY_ID", TEXT, "", "`s3`: the access key id; with the secret, or neither "
                "(then boto3's own chain: `AWS_*` variables, an instance or pod role).", secret=True),
        Setting("FILES_S3_SECRET_ACCESS_KEY", TEXT, "", "`s3`: the secret access key.", secret=True),
        Setting("FILES_S3_PREFIX", TEXT, "", "`s3`: a key prefix, so that one bucket can hold several "
                "deployments' files (e.g. `factorize/prod`)."),
        Setting("FILES_S3_ADDRESSING_STYLE", choice("auto", "path", "virtual"), "auto", "`s3`: `path` "
                "(`endpoint/bucket/key`, what most self-hosted services want) or `virtual` "
                "(`bucket.endpoint/key`)."),
        Setting("FILES_S3_TIMEOUT", above(NUMBER, 0), "5", "`s3`: seconds to connect, and for each read of an "
                "answer, before a call gives up."),
        Setting("FILES_S3_ATTEMPTS", at_least(INT, 1), "2", "`s3`: attempts per call (the first included; "
                "retries wait a jittered second or two): a bucket that does not answer is a 503 within about "
                "`FILES_S3_ATTEMPTS` × `FILES_S3_TIMEOUT` + 2 seconds."),
        Setting("FILES_SWEEP_INTERVAL", at_least(INT, 1), "60", "Seconds between sweeps of expired files, "
                "across the deployment (one worker's maintenance does it, under a lock in Redis)."),
        Setting("FILES_SWEEP_LIMIT", at_least(INT, 1), "1000", "Most expired files one sweep deletes, in "
                "batches of 100 (so rounded up to a multiple of 100), within 5 seconds; a backlog goes at this "
                "many per `FILES_SWEEP_INTERVAL`."),
    ),
)

SECTIONS = (FILES,)
