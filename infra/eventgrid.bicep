// The Event Grid subscription that feeds the `prepare` blob trigger (source=EventGrid, the only blob
// trigger Flex Consumption runs): BlobCreated events of the `datasets` container go to the blob
// extension's webhook of the function app.
//
// Deploy it AFTER the code (the deploy workflow does, with retries): the webhook's `blobs_extension`
// system key exists only once the host has started with a blob trigger in it, and Event Grid validates
// the endpoint when the subscription is created, which fails while the host is still warming up.
// Microsoft's sample creates the subscription the same way, after `azd deploy`, with
// `az functionapp keys list --query systemKeys.blobs_extension`:
// https://github.com/Azure-Samples/functions-quickstart-python-azd-eventgrid-blob (scripts/post-up.sh)
// Endpoint URL and filter: https://learn.microsoft.com/azure/azure-functions/functions-event-grid-blob-trigger#build-the-endpoint-url
targetScope = 'resourceGroup'

@description('The function app (output functionAppName of main.bicep).')
param functionAppName string
@description('The storage account (output storageAccountName of main.bicep).')
param storageAccountName string
@description('The Event Grid system topic of the storage account (output systemTopicName of main.bicep).')
param systemTopicName string
@description('Container for events that could not be delivered (output deadLetterContainerName of main.bicep).')
param deadLetterContainerName string = 'eventgrid-deadletter'
@description('Each EventGrid-source blob trigger of the app and the container it watches: data drops feed prepare (functions/prepare.py), files to score feed batch_score (functions/batch_score.py).')
param triggers array = [
  { functionName: 'prepare', containerName: 'datasets' }
  { functionName: 'batch_score', containerName: 'scoring-requests' }
]

resource app 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource appHost 'Microsoft.Web/sites/host@2024-04-01' existing = {
  parent: app
  name: 'default'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobEvents 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

// The key is read here, at deployment time, and goes straight into the endpoint URL (Event Grid
// stores it and shows only the base URL); it never passes through the workflow or its logs.
var webhookBase = 'https://${app.properties.defaultHostName}/runtime/webhooks/blobs'

resource subscriptions 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = [for t in triggers: {
  parent: blobEvents
  name: '${t.containerName}-to-${replace(t.functionName, '_', '-')}'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: '${webhookBase}?functionName=Host.Functions.${t.functionName}&code=${appHost.listKeys().systemKeys.blobs_extension}'
        maxEventsPerBatch: 1 // one blob per invocation
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: ['Microsoft.Storage.BlobCreated']
      // The trailing slash keeps `datasets-rejected` (the rejection reports) out.
      subjectBeginsWith: '/blobServices/default/containers/${t.containerName}/'
    }
    eventDeliverySchema: 'EventGridSchema'
    // Event Grid retries with back-off while the app scales from zero or restarts; what is still
    // undelivered after 30 attempts or 24 hours is written to the dead-letter container (as the
    // topic's identity: the account accepts no shared key) to be re-dropped by hand.
    // https://learn.microsoft.com/azure/event-grid/delivery-and-retry
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: { type: 'SystemAssigned' }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}]

output subscriptionNames array = [for (t, i) in triggers: subscriptions[i].name]
