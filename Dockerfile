FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN DJANGO_ENV=development python manage.py collectstatic --noinput -v0
EXPOSE 8000
CMD ["gunicorn", "marketing_hub.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3"]
