#!/bin/sh
# One-shot: create the app's and MLflow's buckets and an app account limited to them. Safe to run again.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "local/$AWS_STORAGE_BUCKET_NAME"
mc mb --ignore-existing "local/$MLFLOW_BUCKET_NAME"
cat >/tmp/app-policy.json <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:*"], "Resource": [
      "arn:aws:s3:::$AWS_STORAGE_BUCKET_NAME", "arn:aws:s3:::$AWS_STORAGE_BUCKET_NAME/*",
      "arn:aws:s3:::$MLFLOW_BUCKET_NAME", "arn:aws:s3:::$MLFLOW_BUCKET_NAME/*"
    ]}
  ]
}
POLICY
mc admin policy create local mlops-app /tmp/app-policy.json
mc admin user add local "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
mc admin policy attach local mlops-app --user "$AWS_ACCESS_KEY_ID" || true  # already attached on a re-run
echo "buckets $AWS_STORAGE_BUCKET_NAME and $MLFLOW_BUCKET_NAME ready"
